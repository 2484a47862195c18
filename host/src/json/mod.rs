//! JSON helpers shared by rules, rewrites, load balancers and transforms.

pub mod pointer;
pub mod predicate;

pub use predicate::Predicate;
