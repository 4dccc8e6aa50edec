//! The reference interpreter of the loops dialect (being written).
