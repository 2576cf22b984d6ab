//! Scaling decisions of a Lambent node (DESIGN §5), with no I/O and no clock of their
//! own: time is milliseconds handed in by the caller, so the live pool (wall clock)
//! and `lambent simulate` (virtual time) run the same code.
//!
//! - [`KeepAlivePolicy`] makes a [`FunctionPolicy`] per function, which learns that
//!   function's idle times and answers a [`Schedule`] for each idle period:
//!   [`Fixed`], [`Histogram`] (the hybrid histogram of "Serverless in the Wild") and
//!   [`Mdp`] (the founding document's Markov decision process).
//! - [`Warmth`] is one function's warm-pool state machine: which idle instance takes
//!   an arrival, when an idle one is evicted, when one is pre-warmed, and what that
//!   costs in idle memory.
//! - [`GreedyDual`] orders idle instances for eviction when the node's memory
//!   budget is short.
//! - [`sim`] replays an Azure Functions trace through the policies and `Warmth`.

mod fixed;
mod greedy_dual;
mod histogram;
mod idle;
mod mdp;
pub mod plot;
mod policy;
mod schedule;
pub mod sim;
pub mod trace;
mod warmth;

pub use fixed::Fixed;
pub use greedy_dual::{GreedyDual, Priority};
pub use histogram::Histogram;
pub use idle::{IdleHistogram, IdleSnapshot};
pub use mdp::Mdp;
pub use policy::{FunctionPolicy, KeepAlivePolicy, Learned, PolicyError, Profile, parse_policy};
pub use schedule::Schedule;
pub use warmth::{Action, EvictReason, Start, Warmth, WarmthStats};

/// One minute in milliseconds: the bin width of the idle-time histograms.
pub const MINUTE_MS: u64 = 60_000;
