//! `JSONEncap`: each chunk becomes `{"metadata": <session metadata>, "payload":
//! "<base64 of the chunk>"}`, so a downstream peer sees the session's (rewritten)
//! metadata with every message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::json;

use super::transform_cluster;
use crate::protocol::{Transform, TransformContext};

pub const NAME: &str = "JSONEncap";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy)]
pub struct JsonEncap;

impl Transform for JsonEncap {
    fn process(
        &mut self,
        chunk: Bytes,
        cx: &TransformContext<'_>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), String> {
        let doc = json!({ "metadata": cx.metadata, "payload": STANDARD.encode(&chunk) });
        out.push(Bytes::from(
            serde_json::to_vec(&doc).map_err(|e| e.to_string())?,
        ));
        Ok(())
    }
}

transform_cluster!(JsonEncap, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    JsonEncap
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_metadata_and_payload() {
        let md = json!({"labels": {"user": "u1"}});
        let mut out = Vec::new();
        JsonEncap
            .process(
                Bytes::from_static(b"\x00hi"),
                &TransformContext {
                    session: "s",
                    metadata: &md,
                },
                &mut out,
            )
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"user": "u1"}}, "payload": "AGhp"})
        );
    }
}
