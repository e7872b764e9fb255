//! Size bounds. Every decoder and every command checks its input against these
//! before allocating, so a hostile or mistaken request cannot make the server
//! allocate without bound.

/// Upper bounds on what a single model or request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest feature dimension a model may have.
    pub max_dim: usize,
    /// Largest number of arms in one model, and in one ARMS list.
    pub max_arms: usize,
    /// Largest payload accepted by LOAD, in bytes.
    pub max_payload_bytes: usize,
    /// Largest arm id, in bytes.
    pub max_id_bytes: usize,
    /// Largest TOP a RANK may ask for.
    pub max_top: usize,
    /// Most sequence fences (feedback partition, source partition) one
    /// model, and one payload, may hold (see [`crate::Payload::fences`]).
    pub max_fences: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_dim: 256,
            max_arms: 1_000_000,
            max_payload_bytes: 256 * 1024 * 1024,
            max_id_bytes: 1024,
            max_top: 100_000,
            // Feedback partitions × decisions partitions: 1024 × 1024.
            max_fences: 1 << 20,
        }
    }
}

impl Limits {
    /// No size bound: for data that was checked when it was first written (a
    /// model's own export read back, a LOAD a primary already accepted).
    /// Everything else a decoder checks still applies.
    #[must_use]
    pub fn unbounded() -> Self {
        Self {
            max_dim: usize::MAX,
            max_arms: usize::MAX,
            max_payload_bytes: usize::MAX,
            max_id_bytes: usize::MAX,
            max_top: usize::MAX,
            max_fences: usize::MAX,
        }
    }
}
