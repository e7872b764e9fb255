//! The half of an apply that needs only the payload: each arm's exact box
//! ([θ = A⁻¹b | A⁻¹ | b | A], see [`crate::model`]) and its ranking copy (f32
//! row, θ codes and score bound, see [`crate::bounds`]). It is most of an
//! apply's work, and it touches no model, so `BANDIT.LOAD` computes it on a
//! worker thread and leaves only the fence check, a pointer swap and the f32
//! row copy per arm to Redis' main thread ([`crate::Model::apply_prepared`]).

use crate::bounds::{self, ArmBound, BoundWork};
use crate::kernel::Layout;
use std::sync::Arc;

use crate::model::{ModelView, NEW_ROW};
use crate::packed;
use crate::payload::Payload;

/// The derived values of every arm of one payload, in payload order.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub(crate) dim: usize,
    pub(crate) arms: usize,
    /// The exact box per arm (after an apply: the boxes it replaced).
    pub(crate) exact: Vec<Box<[f64]>>,
    /// Ranking rows, `layout.stride` values each.
    pub(crate) rows: Vec<f32>,
    /// θ codes, `dim` each.
    pub(crate) codes: Vec<i8>,
    pub(crate) bounds: Vec<ArmBound>,
    /// The model row of each arm: looked up by [`Prepared::place`] in
    /// `placed_in`, and after an apply the row each arm went to.
    pub(crate) placed: Vec<u32>,
    pub(crate) placed_in: ModelView,
    /// The model's whole ranking table as this payload leaves it, built by
    /// [`Prepared::place`] for the apply to swap in; after an apply that
    /// swapped, the table it replaced.
    pub(crate) table: Option<Arc<Vec<f32>>>,
    /// The address of the arms `placed` was looked up for: the apply takes
    /// the rows only for that very payload (another one of the same shape
    /// would put its arms on these rows).
    placed_arms: usize,
}

impl Prepared {
    /// Derives every arm of `payload` (validated: each arm has dim values of
    /// b and packed-length values of A⁻¹).
    #[must_use]
    pub fn new(payload: &Payload) -> Self {
        let dim = payload.dim;
        let layout = Layout::new(dim);
        let arms = payload.arms.len();
        let mut prepared = Self {
            dim,
            arms,
            exact: Vec::with_capacity(arms),
            rows: vec![0.0; arms * layout.stride],
            codes: vec![0; arms * dim],
            bounds: vec![ArmBound::NEVER; arms],
            placed: Vec::new(),
            placed_in: ModelView::default(),
            table: None,
            placed_arms: 0,
        };
        let mut work = BoundWork::default();
        let slots = prepared
            .rows
            .chunks_exact_mut(layout.stride)
            .zip(prepared.codes.chunks_exact_mut(dim.max(1)))
            .zip(prepared.bounds.iter_mut());
        let mut theta = vec![0.0; dim];
        for (arm, ((row, codes), bound)) in payload.arms.iter().zip(slots) {
            packed::sym_mul_vec(dim, &arm.a_inv, &arm.b, &mut theta);
            *bound = ranking_copy(&layout, &theta, &arm.a_inv, row, codes, &mut work);
            let gram = arm.a.as_deref().unwrap_or_default();
            prepared.exact.push([theta.as_slice(), &arm.a_inv, &arm.b, gram].concat().into_boxed_slice());
        }
        prepared
    }

    /// Looks up the model rows of `payload`'s arms (this was derived from
    /// it) in the index `view` shows, off Redis' lock: the apply takes them
    /// when the model's index has not changed since, and looks them up
    /// itself otherwise (see [`ModelView`]). Nothing is looked up when the
    /// model already changed its index.
    pub fn place(&mut self, payload: &Payload, view: &ModelView) {
        let Some(index) = view.read_index() else { return };
        self.placed = crate::model::look_up(&index, &payload.arms);
        self.placed_in = view.clone();
        self.placed_arms = payload.arms.as_ptr() as usize;
    }

    /// After [`Prepared::place`], when the payload states at least a
    /// quarter as many arms as the model has: builds the model's whole
    /// ranking table as the apply will leave it, a copy of the table `view`
    /// shows with the payload's rows written in. The apply then swaps it in
    /// under the lock instead of copying the rows there (at d = 32 a row is
    /// 2.2 KB: 10,000 arms are 22 MB, 2–4 ms during which Redis serves no
    /// one). Below a quarter, copying the whole table would cost more than
    /// four times the rows the apply copies; an empty model takes the
    /// prepared rows as they are.
    ///
    /// The table is copied a megabyte at a time, each chunk under a strong
    /// reference taken again: a writer that changes the table meanwhile
    /// moves it away (the copy then stops) instead of having to copy it
    /// because this thread holds it.
    pub fn build_table(&mut self, view: &ModelView) {
        if view != &self.placed_in || self.placed.len() != self.arms {
            return;
        }
        self.table = self.whole_table(view).map(Arc::new);
    }

    /// The model's table with every arm's row written at its placed row,
    /// new arms after the model's in payload order (as the apply adds them);
    /// None when not worth it or when the table changed during the copy.
    fn whole_table(&self, view: &ModelView) -> Option<Vec<f32>> {
        const CHUNK: usize = 1 << 18;
        let stride = Layout::new(self.dim).stride.max(1);
        let len_now = view.read_scoring()?.len();
        let rows_now = len_now / stride;
        if rows_now == 0 || self.arms.saturating_mul(4) < rows_now {
            return None;
        }
        let new_arms = self.placed.iter().filter(|&&row| row == NEW_ROW).count();
        let mut table = Vec::with_capacity((rows_now + new_arms) * stride);
        while table.len() < len_now {
            let now = view.read_scoring()?;
            let end = (table.len() + CHUNK).min(len_now);
            table.extend_from_slice(now.get(table.len()..end)?);
        }
        table.resize((rows_now + new_arms) * stride, 0.0);
        let mut next_new = rows_now;
        for (&row, source) in self.placed.iter().zip(self.rows.chunks_exact(stride)) {
            let row = if row == NEW_ROW {
                next_new += 1;
                next_new - 1
            } else {
                row as usize
            };
            table.get_mut(row * stride..(row + 1) * stride)?.copy_from_slice(source);
        }
        Some(table)
    }

    /// Whether [`Prepared::place`] looked up the rows of this very payload.
    pub(crate) fn placed_for(&self, payload: &Payload) -> bool {
        self.placed.len() == payload.arms.len() && self.placed_arms == payload.arms.as_ptr() as usize
    }

    /// Room for the derived values of `arms` more arms.
    pub(crate) fn reserve(&mut self, arms: usize) {
        let stride = Layout::new(self.dim).stride;
        self.exact.reserve(arms);
        self.rows.reserve(arms * stride);
        self.codes.reserve(arms * self.dim);
        self.bounds.reserve(arms);
    }

    /// Appends the values derived from the next part of a payload (see
    /// [`crate::parts`]): the result is what deriving the joined payload
    /// would give. Rows looked up for either are dropped (they would be
    /// rows of another payload).
    pub(crate) fn append(&mut self, next: Self) {
        self.arms += next.arms;
        self.exact.extend(next.exact);
        self.rows.extend_from_slice(&next.rows);
        self.codes.extend_from_slice(&next.codes);
        self.bounds.extend_from_slice(&next.bounds);
        self.placed = Vec::new();
        self.placed_in = ModelView::default();
        self.table = None;
        self.placed_arms = 0;
    }

    /// Whether this was derived from a payload shaped like `payload`.
    #[must_use]
    pub fn fits(&self, payload: &Payload) -> bool {
        self.dim == payload.dim && self.arms == payload.arms.len()
    }
}

/// Writes the ranking row of an arm from exact θ and packed A⁻¹, its θ codes
/// (`dim` values), and returns its bound (computed from the row as the kernel reads it).
pub(crate) fn ranking_copy(
    layout: &Layout,
    theta: &[f64],
    a_inv: &[f64],
    row: &mut [f32],
    codes: &mut [i8],
    work: &mut BoundWork,
) -> ArmBound {
    layout.write_row(theta, a_inv, row);
    let (theta32, a_inv32) = row.split_at(layout.theta_len.min(row.len()));
    bounds::compute(layout.dim, theta32, a_inv32, codes, work)
}
