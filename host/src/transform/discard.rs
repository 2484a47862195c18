//! `Discard`: swallows every chunk; nothing ever comes back.

use bytes::Bytes;

use super::transform_cluster;
use crate::protocol::{Transform, TransformContext};

pub const NAME: &str = "Discard";

/// Stateless, so the cluster is the transform itself.
#[derive(Debug, Clone, Copy)]
pub struct Discard;

impl Transform for Discard {
    fn process(
        &mut self,
        _: Bytes,
        _: &TransformContext<'_>,
        _: &mut Vec<Bytes>,
    ) -> Result<(), String> {
        Ok(())
    }
}

transform_cluster!(Discard, NAME, |_spec, _target| Ok::<_, std::io::Error>(
    Discard
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swallows() {
        let md = serde_json::json!({});
        let mut out = Vec::new();
        Discard
            .process(
                Bytes::from_static(b"x"),
                &TransformContext {
                    session: "s",
                    metadata: &md,
                },
                &mut out,
            )
            .unwrap();
        assert!(out.is_empty());
    }
}
