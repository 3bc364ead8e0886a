//! Request ids for requests that come without one: random (version 4) UUIDs, as
//! `tower_http`'s `MakeRequestUuid` makes them, but drawn from a generator seeded once per
//! thread instead of a `getrandom` system call per request (~1 % of the service's CPU on
//! small requests). The ids need to be unique, not secret: each thread's generator is
//! SplitMix64 from a random seed (a period of 2^64 per thread).

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes `x-request-id` values: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` in lower-case hex.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeUuid;

impl MakeRequestId for MakeUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_bytes(&uuid_v4(next_u128()))
            .ok()
            .map(RequestId::new)
    }
}

thread_local! {
    /// This thread's generator state; seeded from the standard library's per-thread random
    /// keys (themselves from the operating system once per thread).
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x006c_6f73_7364_u64));
}

fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn next_u128() -> u128 {
    (u128::from(next_u64()) << 64) | u128::from(next_u64())
}

/// The text of the version 4 UUID made of `bits` (122 of them used: the version and variant
/// bits are set).
fn uuid_v4(bits: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, c) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *c = HEX[((bits >> (4 * nibble)) & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        let req = Request::new(());
        for _ in 0..100_000 {
            let id = MakeUuid.make_request_id(&req).unwrap();
            let text = id.header_value().to_str().unwrap().to_owned();
            let parsed = u128::from_str_radix(&text.replace('-', ""), 16).unwrap();
            assert_eq!(text.len(), 36);
            assert_eq!(
                text.char_indices()
                    .filter(|&(_, c)| c == '-')
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
                [8, 13, 18, 23],
                "{text}"
            );
            assert_eq!(text.as_bytes()[14], b'4', "{text}");
            assert!(
                matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
                "{text}"
            );
            assert_eq!(text, text.to_lowercase());
            assert_eq!(format!("{:032x}", parsed), text.replace('-', ""));
            assert!(seen.insert(text));
        }
        // Another thread's generator starts elsewhere.
        let other = std::thread::spawn(next_u64).join().unwrap();
        assert_ne!(other, next_u64());
    }

    #[test]
    fn the_text_is_the_bits_in_order() {
        let id = uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(&id, b"01234567-89ab-4def-8123-456789abcdef");
        let id = uuid_v4(u128::MAX);
        assert_eq!(&id, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_v4(0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
    }
}
