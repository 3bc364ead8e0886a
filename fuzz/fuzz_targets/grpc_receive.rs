//! gRPC `ModelInfer` bodies taken frame by frame (`src/oip/grpc/receive.rs`), against tonic
//! and prost reading the same body whole: both must give the same request (tensors bit for
//! bit) or the same status, nothing may panic, and no memory may stay reserved.
//!
//! The first byte picks how the body is made: bit 0 set, the rest of the input is the body
//! as it is (gRPC prefix included); else the input is a program (see [`Message`]) that
//! writes a `ModelInferRequest` field by field, mostly valid, and frames it. Bits 1-3 give
//! the number of split bytes that follow it: each is a frame's length (cycled until the body
//! ends; 0 is an empty frame, then one of at least a byte; 255 the whole rest).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lossd::AppState;
use lossd::config::Config;
use lossd::oip::grpc::Service;

/// The message limit: small, so that messages past it are easy to reach.
const LIMIT: usize = 1 << 14;

fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut config = Config::default_for_tests();
        config.max_body_bytes = LIMIT;
        AppState::new(config)
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let splits = usize::from(mode >> 1 & 7).min(rest.len());
    let (splits, rest) = rest.split_at(splits);
    let body = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        Message::write(rest)
    };
    let mut frames = Vec::new();
    let mut left = &body[..];
    let mut sizes = splits.iter().cycle();
    while !left.is_empty() {
        let n = match sizes.next() {
            None | Some(255) => left.len(),
            Some(&n) => usize::from(n).min(left.len()),
        };
        // An empty frame is followed by a byte, so that the frames end.
        let (frame, more) = left.split_at(n.max(usize::from(frames.last() == Some(&&[][..]))));
        frames.push(frame);
        left = more;
    }
    let state = state();
    let [alone, layered] = Service::receive_both(state, &frames).map(|r| {
        r.map(|mut r| {
            // From a map: in no order.
            r.params.sort_by(|a, b| a.0.cmp(&b.0));
            r
        })
    });
    match (&alone, &layered) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => {
            // prost's account of a nested message's bad bytes can depend on how many bytes
            // follow them, and the layer takes the raw entries out: the same refusal, its
            // detail may differ.
            let prost = "failed to decode Protobuf message: ";
            let detail = |m: &str| m.strip_prefix(prost).map_or(m.to_owned(), |_| prost.into());
            assert_eq!(
                (a.code(), detail(a.message())),
                (b.code(), detail(b.message())),
                "{body:?}"
            )
        }
        _ => panic!("alone {alone:?}\nlayered {layered:?}\nbody {body:?}"),
    }
    drop(layered);
    assert_eq!(state.memory.reserved(), 0, "memory left reserved");
});

/// Writes a message from a program of one-byte operations and their operands; an operand past
/// the input's end is 0.
struct Message<'a> {
    program: &'a [u8],
    out: Vec<u8>,
    /// Each `inputs` entry written: its datatype's size and element count, when they are
    /// ones lossd takes.
    inputs: Vec<Option<(usize, usize)>>,
    raw: usize,
    /// Open groups.
    groups: Vec<u32>,
}

const DATATYPES: [&str; 6] = ["FP64", "FP32", "INT64", "INT32", "FP16", "BYTES"];

impl<'a> Message<'a> {
    fn write(program: &'a [u8]) -> Vec<u8> {
        let mut m = Message {
            program,
            out: Vec::new(),
            inputs: Vec::new(),
            raw: 0,
            groups: Vec::new(),
        };
        let mut after = Vec::new();
        while let Some(op) = m.next() {
            m.op(op, &mut after);
            if m.out.len() > 2 * LIMIT {
                break;
            }
        }
        while let Some(g) = m.groups.pop() {
            key(&mut m.out, g, 4);
        }
        let mut body = vec![0];
        body.extend_from_slice(&(m.out.len() as u32).to_be_bytes());
        body.extend_from_slice(&m.out);
        body.extend_from_slice(&after);
        body
    }

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.program.split_first()?;
        self.program = rest;
        Some(b)
    }

    fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.program.len());
        let (b, rest) = self.program.split_at(n);
        self.program = rest;
        b.to_vec()
    }

    fn op(&mut self, op: u8, after: &mut Vec<u8>) {
        match op % 12 {
            // model_name, id, model_version
            0 => {
                let field = [1, 2, 3][usize::from(op / 12 % 3)];
                let n = usize::from(self.byte() % 16);
                let s = self.bytes(n);
                bytes_field(&mut self.out, field, &s);
            }
            // an input
            1..=3 => {
                let dt = usize::from(self.byte()) % DATATYPES.len();
                let rank = usize::from(self.byte() % 4);
                let dims: Vec<i64> = (0..rank)
                    .map(|_| match self.byte() {
                        255 => -1,
                        d => i64::from(d % 16),
                    })
                    .collect();
                let mut t = Vec::new();
                bytes_field(&mut t, 1, b"x");
                bytes_field(&mut t, 2, DATATYPES[dt].as_bytes());
                let mut packed = Vec::new();
                for &d in &dims {
                    varint(&mut packed, d as u64);
                }
                bytes_field(&mut t, 3, &packed);
                bytes_field(&mut self.out, 5, &t);
                let size = [8, 4, 8, 4].get(dt).copied();
                let count = dims
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .product::<Option<usize>>();
                self.inputs.push(size.zip(count));
            }
            // a raw entry: mostly the size its input makes
            4..=6 => {
                let fits = self.inputs.get(self.raw).copied().flatten();
                let n = match (fits, op % 12) {
                    (Some((size, count)), 4 | 5) => size * count,
                    _ => usize::from(self.byte()),
                };
                self.raw += 1;
                let mut v = self.bytes(n);
                v.resize(n, 0x7f);
                if op / 12 % 4 == 0 {
                    // A key and a length that are not the shortest: valid all the same.
                    self.out.extend_from_slice(&[0xba, 0x80, 0x00]);
                    let mut len = Vec::new();
                    varint(&mut len, n as u64);
                    let last = len.len() - 1;
                    len[last] |= 0x80;
                    len.push(0);
                    self.out.extend_from_slice(&len);
                    self.out.extend_from_slice(&v);
                } else {
                    bytes_field(&mut self.out, 7, &v);
                }
            }
            // an unknown field (or a known one with any wire type)
            7 => {
                let field = u32::from(self.byte() % 24 + 1);
                let wire = [0, 1, 2, 5][usize::from(op / 12 % 4)];
                key(&mut self.out, field, wire);
                match wire {
                    0 => {
                        let v = u64::from(self.byte()) << 50;
                        varint(&mut self.out, v);
                    }
                    1 => {
                        let b = self.bytes(8);
                        self.out.extend_from_slice(&b);
                    }
                    5 => {
                        let b = self.bytes(4);
                        self.out.extend_from_slice(&b);
                    }
                    _ => {
                        let n = usize::from(self.byte() % 32);
                        let b = self.bytes(n);
                        varint(&mut self.out, b.len() as u64);
                        self.out.extend_from_slice(&b);
                    }
                }
            }
            // a group opens
            8 => {
                let field = u32::from(self.byte()) + 16;
                key(&mut self.out, field, 3);
                self.groups.push(field);
            }
            // the innermost group closes (rarely with another field's end)
            9 => {
                if let Some(g) = self.groups.pop() {
                    let g = if op / 12 == 20 { g + 1 } else { g };
                    key(&mut self.out, g, 4);
                }
            }
            // bytes as they are
            10 => {
                let n = usize::from(self.byte() % 12);
                let b = self.bytes(n);
                self.out.extend_from_slice(&b);
            }
            // bytes after the message
            _ => {
                let n = usize::from(self.byte() % 16);
                let b = self.bytes(n);
                after.extend_from_slice(&b);
            }
        }
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
