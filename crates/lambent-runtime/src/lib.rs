//! lambent-runtime
