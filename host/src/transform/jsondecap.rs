//! `JSONDecap`: the reverse of `JSONEncap`; a chunk that is not an encapsulated
//! message is dropped and logged against the session.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;

use super::transform_cluster;
use crate::core::{StageContext, StageError, Transform};
use crate::core::build::Protocol;

pub const NAME: &str = "JSONDecap";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonDecap;

#[derive(Deserialize)]
struct Encapsulated {
    payload: String,
}

#[async_trait::async_trait]
impl Transform for JsonDecap {
    async fn process(
        &mut self,
        chunk: Bytes,
        _: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError> {
        let msg: Encapsulated = serde_json::from_slice(&chunk).map_err(|e| {
            StageError::Chunk(format!("JSONDecap: not an encapsulated message: {e}"))
        })?;
        let payload = STANDARD
            .decode(msg.payload.as_bytes())
            .map_err(|e| StageError::Chunk(format!("JSONDecap: payload is not base64: {e}")))?;
        out.push(Bytes::from(payload));
        Ok(())
    }
}

transform_cluster!(JsonDecap, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    JsonDecap
));

/// JSONDecap.
pub const PROTOCOL: Protocol = Protocol::bare_cluster::<JsonDecap>(NAME, Protocol::CARRIES_NOTHING);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stage::Detached;
    use crate::transform::jsonencap::JsonEncap;

    #[tokio::test]
    async fn round_trips_and_rejects_garbage() {
        let md = serde_json::json!({"a": 1});
        let cx = Detached::new("s", md.clone());
        let (mut wrapped, mut plain) = (Vec::new(), Vec::new());
        JsonEncap
            .process(Bytes::from_static(b"payload\xff"), &cx, &mut wrapped)
            .await
            .unwrap();
        JsonDecap
            .process(wrapped.pop().unwrap(), &cx, &mut plain)
            .await
            .unwrap();
        assert_eq!(plain, vec![Bytes::from_static(b"payload\xff")]);
        assert!(
            JsonDecap
                .process(Bytes::from_static(b"{not json"), &cx, &mut plain)
                .await
                .is_err()
        );
        assert!(
            JsonDecap
                .process(
                    Bytes::from_static(b"{\"payload\": \"!!\"}"),
                    &cx,
                    &mut plain
                )
                .await
                .is_err()
        );
        assert_eq!(plain.len(), 1);
    }
}
