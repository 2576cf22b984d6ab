//! Keep-alive policies live in `lambent-scale`, shared with `lambent simulate`; the
//! engine uses them through the pool.

pub use lambent_scale::{Fixed, KeepAlivePolicy, parse_policy};
