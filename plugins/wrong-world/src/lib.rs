//! A deliberately malformed plugin: the proxy must refuse it at upload (422).

wit_bindgen::generate!({ path: "wit", world: "wrong" });

use exports::l7mp::plugin::transform::{Guest, GuestSession, Session};

struct Plugin;
struct Nothing;

impl GuestSession for Nothing {
    fn open(_config: String) -> Session {
        Session::new(Nothing)
    }
}

impl Guest for Plugin {
    type Session = Nothing;
}

export!(Plugin);
