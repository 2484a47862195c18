//! `hostile`: a transform that misbehaves on demand, for testing that a plugin can
//! hurt no one but the session it serves. A chunk that reads `loop` spins forever,
//! `grow` allocates until memory runs out, `leak` leaks 256 KiB and passes (a language
//! runtime that leaks a little per call), `trap` panics (a Wasm trap), `fail` returns an
//! error; anything else passes unchanged.

use l7mp_plugin_sdk::transform::export_transform;
use l7mp_plugin_sdk::transform::exports::l7mp::plugin::transform::{
    Guest, GuestSession, MetadataUpdate, Output, Session,
};

struct Hostile;

fn misbehave(chunk: Vec<u8>) -> Result<Output, String> {
    match chunk.as_slice() {
        b"loop" => loop {
            std::hint::black_box(&chunk);
        },
        b"grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        b"leak" => {
            std::hint::black_box(Box::leak(vec![1u8; 256 << 10].into_boxed_slice()));
            Ok(Output { chunks: vec![chunk], metadata: MetadataUpdate::Keep })
        }
        b"trap" => panic!("asked to trap"),
        b"fail" => Err("asked to fail".into()),
        _ => Ok(Output { chunks: vec![chunk], metadata: MetadataUpdate::Keep }),
    }
}

impl GuestSession for Hostile {
    fn open(_metadata: String, _config: String) -> Result<Session, String> {
        Ok(Session::new(Hostile))
    }

    fn ingress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        misbehave(chunk)
    }

    fn egress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        misbehave(chunk)
    }
}

struct Plugin;

impl Guest for Plugin {
    type Session = Hostile;
}

export_transform!(Plugin);
