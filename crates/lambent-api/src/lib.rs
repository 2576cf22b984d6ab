//! lambent-api
