//! lambent-engine
