//! A JSON pointer (the first line) applied to a document (the rest): parsed, followed
//! and written through, as rewrites and load balancers do.

#![no_main]

use l7mp::json::pointer::Pointer;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, rest) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(pointer) = Pointer::parse(path) else {
        return;
    };
    let mut doc: Value =
        serde_json::from_str(rest).unwrap_or_else(|_| json!({"a": [1, {"b": "c"}]}));
    let _ = pointer.get(&doc);
    if pointer.set(&mut doc, json!({"x": [1, 2]})).is_ok() {
        // `-` appends to an array: there is nothing to read back at `-`.
        let appends = path == "-" || path.ends_with("/-");
        assert!(
            appends || pointer.get(&doc).is_some(),
            "a value just set can be read back"
        );
        let _ = doc.to_string();
    }
    let round: Result<Pointer, _> = serde_json::from_value(serde_json::to_value(&pointer).unwrap());
    assert_eq!(round.ok().as_ref(), Some(&pointer));
});
