//! `Echo`: every chunk written comes back unchanged.

use bytes::Bytes;

use super::transform_cluster;
use crate::protocol::{Transform, TransformContext};

pub const NAME: &str = "Echo";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Transform for Echo {
    fn process(
        &mut self,
        chunk: Bytes,
        _: &TransformContext<'_>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), String> {
        out.push(chunk);
        Ok(())
    }
}

transform_cluster!(Echo, NAME, |_spec, _target| Ok::<_, std::io::Error>(Echo));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes() {
        let md = serde_json::json!({});
        let cx = TransformContext {
            session: "s",
            metadata: &md,
        };
        let mut out = Vec::new();
        Echo.process(Bytes::from_static(b"hi"), &cx, &mut out)
            .unwrap();
        assert_eq!(out, vec![Bytes::from_static(b"hi")]);
    }
}
