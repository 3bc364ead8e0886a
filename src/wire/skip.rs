//! [`SkipKey`]: a deserializer adapter that hides one key of the top-level object.
//!
//! A batch job is a loss request plus a `"loss"` key naming the loss. Hiding that key lets
//! the job decode through the loss's own request type, unknown fields still rejected, with
//! no intermediate value tree.

use std::fmt;

use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::de::Text;

/// Wraps a deserializer so that the top-level object's `key` is skipped.
pub struct SkipKey<'k, D> {
    /// The wrapped deserializer.
    pub inner: D,
    /// The key to hide.
    pub key: &'k str,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipKey<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(Wrap {
            visitor,
            key: self.key,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(Wrap {
            visitor,
            key: self.key,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(
            name,
            fields,
            Wrap {
                visitor,
                key: self.key,
            },
        )
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

struct Wrap<'k, V> {
    visitor: V,
    key: &'k str,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(SkipMap { map, key: self.key })
    }
}

struct SkipMap<'k, A> {
    map: A,
    key: &'k str,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(k) = self.map.next_key::<Text<'de>>()? else {
                return Ok(None);
            };
            if k.as_str() == self.key {
                self.map.next_value::<IgnoredAny>()?;
                continue;
            }
            return match k {
                Text::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::new(s)),
                Text::Owned(s) => seed.deserialize(StringDeserializer::new(s)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Job {
        a: u32,
        b: Vec<u32>,
    }

    fn decode(json: &str) -> Result<Job, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        Job::deserialize(SkipKey {
            inner: &mut de,
            key: "loss",
        })
    }

    #[test]
    fn the_hidden_key_is_skipped_wherever_it_is_and_others_still_count() {
        let want = Job {
            a: 1,
            b: vec![2, 3],
        };
        assert_eq!(
            decode(r#"{"loss": "x", "a": 1, "b": [2, 3]}"#).unwrap(),
            want
        );
        assert_eq!(
            decode(r#"{"a": 1, "loss": {"deep": [1]}, "b": [2, 3]}"#).unwrap(),
            want
        );
        assert_eq!(decode(r#"{"a": 1, "b": [2, 3]}"#).unwrap(), want);
        assert!(
            decode(r#"{"a": 1, "b": [2], "c": 0}"#)
                .unwrap_err()
                .to_string()
                .contains("unknown field `c`")
        );
        assert!(
            decode(r#"{"a": 1}"#)
                .unwrap_err()
                .to_string()
                .contains("missing field `b`")
        );
    }
}
