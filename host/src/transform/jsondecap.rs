//! `JSONDecap`: the reverse of `JSONEncap`; a chunk that is not an encapsulated
//! message is dropped and logged against the session.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;

use super::transform_cluster;
use crate::protocol::{Transform, TransformContext};

pub const NAME: &str = "JSONDecap";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy)]
pub struct JsonDecap;

#[derive(Deserialize)]
struct Encapsulated {
    payload: String,
}

impl Transform for JsonDecap {
    fn process(
        &mut self,
        chunk: Bytes,
        _: &TransformContext<'_>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), String> {
        let msg: Encapsulated = serde_json::from_slice(&chunk)
            .map_err(|e| format!("JSONDecap: not an encapsulated message: {e}"))?;
        let payload = STANDARD
            .decode(msg.payload.as_bytes())
            .map_err(|e| format!("JSONDecap: payload is not base64: {e}"))?;
        out.push(Bytes::from(payload));
        Ok(())
    }
}

transform_cluster!(JsonDecap, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    JsonDecap
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::jsonencap::JsonEncap;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let md = serde_json::json!({"a": 1});
        let cx = TransformContext {
            session: "s",
            metadata: &md,
        };
        let (mut wrapped, mut plain) = (Vec::new(), Vec::new());
        JsonEncap
            .process(Bytes::from_static(b"payload\xff"), &cx, &mut wrapped)
            .unwrap();
        JsonDecap
            .process(wrapped.pop().unwrap(), &cx, &mut plain)
            .unwrap();
        assert_eq!(plain, vec![Bytes::from_static(b"payload\xff")]);
        assert!(
            JsonDecap
                .process(Bytes::from_static(b"{not json"), &cx, &mut plain)
                .is_err()
        );
        assert!(
            JsonDecap
                .process(
                    Bytes::from_static(b"{\"payload\": \"!!\"}"),
                    &cx,
                    &mut plain
                )
                .is_err()
        );
        assert_eq!(plain.len(), 1);
    }
}
