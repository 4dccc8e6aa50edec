//! Liveness-based memory planning: every temporary buffer of a compiled model
//! gets an offset into one shared arena.
//!
//! The executor runs its kernels as a numbered sequence of steps. A temporary
//! buffer is live from the step that first writes it to the step that last
//! reads it, both inclusive ([`BufferReq::first`], [`BufferReq::last`]). Two
//! buffers whose live intervals intersect must occupy disjoint byte ranges;
//! buffers that are never live at the same time may share memory. Each buffer
//! is placed with its size rounded up to its alignment (its *aligned size*),
//! so a plan never depends on the caller keeping padding bytes untouched.
//!
//! No arena can be smaller than the largest total aligned size live at any
//! one step, the [`MemoryPlan::lower_bound`]; finding the smallest arena is
//! NP-hard in general (it is dynamic storage allocation), so [`plan_memory`]
//! uses offline greedy heuristics of the kind used by mobile inference
//! runtimes:
//!
//! 1. Visit the buffers in some priority order, for example largest first.
//! 2. Place each one at an aligned offset where its address range misses every
//!    already-placed buffer whose live interval intersects its own: either the
//!    lowest such offset (*first fit*) or the one in the tightest gap between
//!    those buffers that is still large enough (*best fit*), falling back to
//!    just above the highest of them.
//!
//! Large buffers placed first carve the arena into a few big regions, and
//! small short-lived ones then fill the holes. No single order wins on every
//! model, so the planner tries several orders (by size, by interval length,
//! by first use, by size × length, and "by breadth": the buffers of the most
//! crowded step first) with both fit rules, and keeps the smallest arena. Ties
//! go to the earlier candidate, so planning is deterministic. The cost is
//! O(k · n² log n) for n buffers and k candidates, which is negligible next
//! to compiling the kernels.

use std::cmp::Reverse;

/// Why a memory plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A buffer's alignment is zero or not a power of two.
    #[error("buffer {index}: alignment {align} is not a power of two")]
    BadAlign {
        /// The buffer's index in the request list.
        index: usize,
        /// The offending alignment.
        align: usize,
    },
    /// A buffer's last read comes before its first write.
    #[error("buffer {index}: last use (step {last}) comes before first use (step {first})")]
    BadInterval {
        /// The buffer's index in the request list.
        index: usize,
        /// The step of the first write.
        first: usize,
        /// The step of the last read.
        last: usize,
    },
    /// Rounding a buffer's size up to its alignment overflows `usize`.
    #[error("buffer {index}: size {size} rounded up to alignment {align} overflows usize")]
    SizeOverflow {
        /// The buffer's index in the request list.
        index: usize,
        /// The requested size in bytes.
        size: usize,
        /// The requested alignment.
        align: usize,
    },
    /// The arena (or the liveness lower bound) would not fit in `usize`.
    #[error("the memory plan's arena size overflows usize")]
    ArenaOverflow,
}

/// One temporary buffer to place: its size, alignment and live interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferReq {
    /// Size in bytes (may be zero).
    pub size: usize,
    /// Required alignment of the buffer's offset in bytes; a power of two.
    pub align: usize,
    /// Step index of the buffer's first write.
    pub first: usize,
    /// Step index of the buffer's last read (inclusive, `>= first`).
    pub last: usize,
}

impl BufferReq {
    /// A buffer of `size` bytes aligned to `align`, live over steps `first..=last`.
    pub fn new(size: usize, align: usize, first: usize, last: usize) -> Self {
        BufferReq { size, align, first, last }
    }

    /// The size rounded up to the alignment: the bytes the plan reserves.
    /// `None` if the alignment is not a power of two or the rounding overflows.
    pub fn aligned_size(&self) -> Option<usize> {
        if !self.align.is_power_of_two() {
            return None;
        }
        self.size.checked_next_multiple_of(self.align)
    }

    /// Whether the two buffers' live intervals share at least one step.
    pub fn live_overlaps(&self, other: &BufferReq) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Offsets of every buffer in one arena, with the arena's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Byte offset of each buffer in the arena, in request order.
    pub offsets: Vec<usize>,
    /// Arena size in bytes: the maximum over buffers of offset plus aligned size
    /// (0 when there are no buffers).
    pub arena_bytes: usize,
    /// The liveness lower bound: the maximum over steps of the total aligned
    /// size of the buffers live at that step. No valid plan is smaller.
    pub lower_bound: usize,
}

impl MemoryPlan {
    /// Plans `reqs`; the same as [`plan_memory`].
    pub fn new(reqs: &[BufferReq]) -> Result<MemoryPlan, PlanError> {
        plan_memory(reqs)
    }

    /// `arena_bytes / lower_bound`: 1.0 is optimal. An empty plan (lower
    /// bound 0) reports 1.0.
    pub fn ratio(&self) -> f64 {
        if self.lower_bound == 0 { 1.0 } else { self.arena_bytes as f64 / self.lower_bound as f64 }
    }

    /// Checks the plan against the requests it was made for: one offset per
    /// buffer, every offset aligned, buffers live at a common step disjoint in
    /// memory, `arena_bytes` equal to the highest aligned end, `lower_bound`
    /// equal to the liveness lower bound, and `arena_bytes >= lower_bound`.
    /// The message names the first violation found.
    pub fn verify(&self, reqs: &[BufferReq]) -> Result<(), String> {
        let sizes = aligned_sizes(reqs).map_err(|e| format!("invalid requests: {e}"))?;
        if self.offsets.len() != reqs.len() {
            return Err(format!("{} offsets for {} buffers", self.offsets.len(), reqs.len()));
        }
        let mut high = 0usize;
        let mut ranges = Vec::with_capacity(reqs.len());
        for (i, (r, (&off, &size))) in reqs.iter().zip(self.offsets.iter().zip(&sizes)).enumerate() {
            if off % r.align != 0 {
                return Err(format!("buffer {i}: offset {off} is not a multiple of its alignment {}", r.align));
            }
            let end =
                off.checked_add(size).ok_or_else(|| format!("buffer {i}: offset {off} + size {size} overflows"))?;
            high = high.max(end);
            ranges.push((off, end));
        }
        if self.arena_bytes != high {
            return Err(format!("arena_bytes is {} but the highest buffer ends at {high}", self.arena_bytes));
        }
        // Sweep the buffers by first use; `active` holds those whose interval
        // may still reach the current one.
        let mut order: Vec<usize> = (0..reqs.len()).filter(|&i| sizes[i] > 0).collect();
        order.sort_by_key(|&i| (reqs[i].first, i));
        let mut active: Vec<usize> = Vec::new();
        for &i in &order {
            active.retain(|&j| reqs[j].last >= reqs[i].first);
            let (lo, hi) = ranges[i];
            for &j in &active {
                let (jlo, jhi) = ranges[j];
                if lo < jhi && jlo < hi {
                    let (a, b) = (i.min(j), i.max(j));
                    return Err(format!(
                        "buffers {a} and {b} are live together (steps {}..={} and {}..={}) \
                         but overlap in memory ([{}, {}) and [{}, {}))",
                        reqs[a].first,
                        reqs[a].last,
                        reqs[b].first,
                        reqs[b].last,
                        ranges[a].0,
                        ranges[a].1,
                        ranges[b].0,
                        ranges[b].1
                    ));
                }
            }
            active.push(i);
        }
        let lb = lower_bound_of(reqs, &sizes).map_err(|e| e.to_string())?;
        if self.lower_bound != lb {
            return Err(format!("lower_bound is {} but the liveness lower bound is {lb}", self.lower_bound));
        }
        if self.arena_bytes < self.lower_bound {
            return Err(format!("arena_bytes {} is below the lower bound {}", self.arena_bytes, self.lower_bound));
        }
        Ok(())
    }
}

/// Places every buffer in one arena; see the module docs for the heuristics.
///
/// Fails if an alignment is not a power of two, an interval is reversed
/// (`first > last`), or a size or the arena overflows `usize`.
pub fn plan_memory(reqs: &[BufferReq]) -> Result<MemoryPlan, PlanError> {
    let sizes = aligned_sizes(reqs)?;
    let lower_bound = lower_bound_of(reqs, &sizes)?;
    // `orders` is never empty, so the placeholder is always replaced.
    let mut best = MemoryPlan { offsets: Vec::new(), arena_bytes: 0, lower_bound };
    let mut have_best = false;
    for order in orders(reqs, &sizes) {
        for fit in [Fit::First, Fit::Best] {
            let (offsets, arena_bytes) = place(reqs, &sizes, &order, fit)?;
            if !have_best || arena_bytes < best.arena_bytes {
                best = MemoryPlan { offsets, arena_bytes, lower_bound };
                have_best = true;
            }
            if best.arena_bytes == lower_bound {
                return Ok(best); // Optimal: no later candidate can beat it.
            }
        }
    }
    Ok(best)
}

/// The liveness lower bound of `reqs`: the maximum over steps of the total
/// aligned size of the buffers live at that step (see
/// [`MemoryPlan::lower_bound`]). Validates the requests like [`plan_memory`].
pub fn liveness_lower_bound(reqs: &[BufferReq]) -> Result<usize, PlanError> {
    let sizes = aligned_sizes(reqs)?;
    lower_bound_of(reqs, &sizes)
}

/// Validates the requests and returns their aligned sizes.
fn aligned_sizes(reqs: &[BufferReq]) -> Result<Vec<usize>, PlanError> {
    reqs.iter()
        .enumerate()
        .map(|(index, r)| {
            if !r.align.is_power_of_two() {
                return Err(PlanError::BadAlign { index, align: r.align });
            }
            if r.first > r.last {
                return Err(PlanError::BadInterval { index, first: r.first, last: r.last });
            }
            r.aligned_size().ok_or(PlanError::SizeOverflow { index, size: r.size, align: r.align })
        })
        .collect()
}

/// Sweeps interval endpoints in step order; steps are arbitrary `usize`s, so
/// no per-step array is allocated.
fn lower_bound_of(reqs: &[BufferReq], sizes: &[usize]) -> Result<usize, PlanError> {
    // (step, is_start, size): at equal steps ends (false) sort before starts,
    // and an end event is keyed at `last + 1` (which cannot overflow into a
    // wrong order: `last == usize::MAX` ends are simply never applied).
    let mut events: Vec<(usize, bool, usize)> = Vec::with_capacity(2 * reqs.len());
    for (r, &s) in reqs.iter().zip(sizes) {
        if s == 0 {
            continue;
        }
        events.push((r.first, true, s));
        if let Some(end) = r.last.checked_add(1) {
            events.push((end, false, s));
        }
    }
    events.sort_unstable();
    let (mut live, mut peak) = (0usize, 0usize);
    for (_, start, s) in events {
        if start {
            live = live.checked_add(s).ok_or(PlanError::ArenaOverflow)?;
            peak = peak.max(live);
        } else {
            live -= s;
        }
    }
    Ok(peak)
}

/// Where a buffer goes among the gaps left by its live neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The lowest gap that is large enough.
    First,
    /// The smallest gap that is large enough (lowest on ties).
    Best,
}

/// The candidate visiting orders, each a permutation of `0..reqs.len()`.
fn orders(reqs: &[BufferReq], sizes: &[usize]) -> Vec<Vec<usize>> {
    let n = reqs.len();
    let len = |i: usize| reqs[i].last - reqs[i].first;
    let by_size = sorted_by(n, |i| (Reverse(sizes[i]), reqs[i].first));
    let by_length = sorted_by(n, |i| (Reverse(len(i)), Reverse(sizes[i]), reqs[i].first));
    let by_area = sorted_by(n, |i| {
        let area = sizes[i] as u128 * (len(i) as u128 + 1);
        (Reverse(area), Reverse(sizes[i]), reqs[i].first)
    });
    let by_first = sorted_by(n, |i| (reqs[i].first, Reverse(sizes[i])));
    vec![by_size, by_breadth(reqs, sizes), by_length, by_area, by_first]
}

/// `0..n` sorted by `key`, ties by index.
fn sorted_by<K: Ord>(n: usize, key: impl Fn(usize) -> K) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.sort_by_key(|&i| (key(i), i));
    v
}

/// Steps ordered by how much is live there (most first); within a step, its
/// not-yet-listed buffers by size descending.
fn by_breadth(reqs: &[BufferReq], sizes: &[usize]) -> Vec<usize> {
    // Only steps where some buffer starts matter: the live set only grows there.
    let mut starts: Vec<usize> = reqs.iter().map(|r| r.first).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut breadth: Vec<(Reverse<u128>, usize)> = starts
        .iter()
        .map(|&s| {
            let total: u128 =
                reqs.iter().zip(sizes).filter(|(r, _)| r.first <= s && s <= r.last).map(|(_, &sz)| sz as u128).sum();
            (Reverse(total), s)
        })
        .collect();
    breadth.sort_unstable();
    let mut taken = vec![false; reqs.len()];
    let mut order = Vec::with_capacity(reqs.len());
    for (_, s) in breadth {
        let mut here: Vec<usize> =
            (0..reqs.len()).filter(|&i| !taken[i] && reqs[i].first <= s && s <= reqs[i].last).collect();
        here.sort_by_key(|&i| (Reverse(sizes[i]), reqs[i].first, i));
        for i in here {
            taken[i] = true;
            order.push(i);
        }
    }
    debug_assert_eq!(order.len(), reqs.len());
    order
}

/// Greedy placement of the buffers in `order`; returns offsets and arena size.
fn place(reqs: &[BufferReq], sizes: &[usize], order: &[usize], fit: Fit) -> Result<(Vec<usize>, usize), PlanError> {
    let mut offsets = vec![0usize; reqs.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(reqs.len());
    let mut arena = 0usize;
    let mut conflicts: Vec<(usize, usize)> = Vec::new();
    for &i in order {
        let (size, align) = (sizes[i], reqs[i].align);
        if size == 0 {
            continue; // An empty range conflicts with nothing; offset 0 is aligned.
        }
        conflicts.clear();
        conflicts.extend(
            placed.iter().filter(|&&j| reqs[j].live_overlaps(&reqs[i])).map(|&j| (offsets[j], offsets[j] + sizes[j])),
        );
        conflicts.sort_unstable();
        // `cursor` is the lowest aligned address above every conflict seen so
        // far; the gap before the next conflict is [cursor, lo).
        let mut cursor = 0usize;
        let mut chosen: Option<(usize, usize)> = None; // (gap size, offset)
        for &(lo, hi) in &conflicts {
            if lo >= cursor && lo - cursor >= size {
                let gap = lo - cursor;
                if chosen.is_none_or(|(g, _)| gap < g) {
                    chosen = Some((gap, cursor));
                }
                if fit == Fit::First {
                    break;
                }
            }
            if hi > cursor {
                cursor = hi.checked_next_multiple_of(align).ok_or(PlanError::ArenaOverflow)?;
            }
        }
        let off = chosen.map_or(cursor, |(_, off)| off);
        let end = off.checked_add(size).ok_or(PlanError::ArenaOverflow)?;
        offsets[i] = off;
        arena = arena.max(end);
        placed.push(i);
    }
    Ok((offsets, arena))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a tiny deterministic PRNG for property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
    }

    fn req(size: usize, first: usize, last: usize) -> BufferReq {
        BufferReq::new(size, 64, first, last)
    }

    fn plan_ok(reqs: &[BufferReq]) -> MemoryPlan {
        let plan = plan_memory(reqs).expect("valid requests");
        plan.verify(reqs).expect("plan verifies");
        plan
    }

    #[test]
    fn empty_input_gives_empty_arena() {
        let plan = plan_ok(&[]);
        assert_eq!(plan.offsets, Vec::<usize>::new());
        assert_eq!((plan.arena_bytes, plan.lower_bound), (0, 0));
        assert_eq!(plan.ratio(), 1.0);
    }

    #[test]
    fn single_buffer_is_rounded_up_to_its_alignment() {
        let plan = plan_ok(&[BufferReq::new(100, 64, 3, 3)]);
        assert_eq!(plan.offsets, vec![0]);
        assert_eq!((plan.arena_bytes, plan.lower_bound), (128, 128));
    }

    #[test]
    fn zero_sized_buffers_take_no_space() {
        let reqs = [req(0, 0, 5), req(64, 0, 5), BufferReq::new(0, 1, 2, 2)];
        let plan = plan_ok(&reqs);
        assert_eq!((plan.arena_bytes, plan.lower_bound), (64, 64));
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let reqs = [req(1000, 0, 1), req(500, 2, 3), req(800, 4, 4), req(64, 5, 9)];
        let plan = plan_ok(&reqs);
        assert_eq!(plan.offsets, vec![0; 4]);
        assert_eq!(plan.arena_bytes, 1024);
    }

    #[test]
    fn simultaneously_live_buffers_are_stacked() {
        let reqs = [req(64, 0, 9), req(128, 0, 9), req(192, 0, 9)];
        let plan = plan_ok(&reqs);
        assert_eq!(plan.arena_bytes, 384);
        assert_eq!(plan.ratio(), 1.0);
    }

    #[test]
    fn mixed_alignments_are_respected() {
        let reqs = [
            BufferReq::new(3, 1, 0, 2),
            BufferReq::new(5, 4096, 1, 3),
            BufferReq::new(7, 8, 0, 3),
            BufferReq::new(70, 16, 2, 2),
        ];
        let plan = plan_ok(&reqs);
        assert_eq!(plan.offsets[1] % 4096, 0);
        assert_eq!(plan.offsets[2] % 8, 0);
        assert_eq!(plan.offsets[3] % 16, 0);
    }

    #[test]
    fn validation_errors_name_the_buffer() {
        let e = plan_memory(&[req(8, 0, 0), BufferReq::new(8, 48, 0, 1)]).unwrap_err();
        assert_eq!(e, PlanError::BadAlign { index: 1, align: 48 });
        assert_eq!(e.to_string(), "buffer 1: alignment 48 is not a power of two");
        let e = plan_memory(&[BufferReq::new(8, 0, 0, 1)]).unwrap_err();
        assert_eq!(e, PlanError::BadAlign { index: 0, align: 0 });
        let e = plan_memory(&[req(8, 0, 0), req(8, 5, 4)]).unwrap_err();
        assert_eq!(e, PlanError::BadInterval { index: 1, first: 5, last: 4 });
        assert!(e.to_string().contains("comes before first use"), "{e}");
        let e = plan_memory(&[req(usize::MAX - 3, 0, 0)]).unwrap_err();
        assert!(matches!(e, PlanError::SizeOverflow { index: 0, .. }), "{e}");
        let half = usize::MAX / 2 + 1;
        let e = plan_memory(&[BufferReq::new(half, 1, 0, 1), BufferReq::new(half, 1, 1, 2)]).unwrap_err();
        assert_eq!(e, PlanError::ArenaOverflow);
        assert_eq!(
            liveness_lower_bound(&[req(8, 2, 1)]).unwrap_err().to_string(),
            "buffer 0: last use (step 1) comes before first use (step 2)"
        );
    }

    #[test]
    fn huge_step_indices_are_fine() {
        let reqs = [req(64, usize::MAX - 1, usize::MAX), req(64, usize::MAX, usize::MAX), req(64, 0, 0)];
        let plan = plan_ok(&reqs);
        assert_eq!((plan.arena_bytes, plan.lower_bound), (128, 128));
    }

    #[test]
    fn lower_bound_counts_inclusive_endpoints() {
        // Buffer 0 is read at step 2, buffer 1 is written at step 2: both live there.
        assert_eq!(liveness_lower_bound(&[req(64, 0, 2), req(64, 2, 4)]), Ok(128));
        assert_eq!(liveness_lower_bound(&[req(64, 0, 1), req(64, 2, 4)]), Ok(64));
        assert_eq!(liveness_lower_bound(&[BufferReq::new(1, 32, 0, 0)]), Ok(32));
    }

    #[test]
    fn verify_rejects_broken_plans() {
        let reqs = [req(64, 0, 1), req(64, 1, 2), req(64, 3, 3)];
        let good = plan_ok(&reqs);
        assert_eq!(good.arena_bytes, 128);

        let mut p = good.clone();
        p.offsets.pop();
        assert!(p.verify(&reqs).unwrap_err().contains("2 offsets for 3 buffers"));

        let mut p = good.clone();
        p.offsets = vec![0, 0, 0];
        p.arena_bytes = 64;
        let e = p.verify(&reqs).unwrap_err();
        assert!(e.contains("buffers 0 and 1") && e.contains("overlap in memory"), "{e}");

        let mut p = good.clone();
        p.offsets[2] += 1;
        assert!(p.verify(&reqs).unwrap_err().contains("not a multiple"));

        let mut p = good.clone();
        p.arena_bytes += 64;
        assert!(p.verify(&reqs).unwrap_err().contains("highest buffer ends"));

        let mut p = good.clone();
        p.lower_bound = 64;
        assert!(p.verify(&reqs).unwrap_err().contains("liveness lower bound is 128"));

        let bad = [BufferReq::new(1, 3, 0, 0)];
        assert!(good.verify(&bad).unwrap_err().contains("invalid requests"));
    }

    #[test]
    fn planning_is_deterministic() {
        let mut rng = Rng(7);
        let reqs: Vec<BufferReq> = (0..80)
            .map(|_| {
                let first = rng.range(0, 40);
                req(rng.range(1, 5000), first, first + rng.range(0, 6))
            })
            .collect();
        assert_eq!(plan_memory(&reqs), plan_memory(&reqs));
    }

    /// `MemoryPlan::new` is `plan_memory`.
    #[test]
    fn new_is_plan_memory() {
        let reqs = [req(64, 0, 1), req(640, 1, 2)];
        assert_eq!(MemoryPlan::new(&reqs), plan_memory(&reqs));
    }

    /// Activation bytes of an f32 NCHW tensor (batch 1).
    fn act(c: usize, hw: usize) -> usize {
        4 * c * hw * hw
    }

    /// A plain CNN chain: every activation is written by one kernel and read by
    /// the next, so it is live for exactly two steps.
    fn cnn_chain() -> Vec<BufferReq> {
        // (channels, spatial) of a VGG/MobileNet-like stack, plus small tails.
        let shapes = [
            (32, 112),
            (32, 112),
            (64, 112),
            (64, 56),
            (128, 56),
            (128, 56),
            (128, 28),
            (256, 28),
            (256, 28),
            (256, 14),
            (512, 14),
            (512, 14),
            (512, 14),
            (512, 14),
            (512, 14),
            (512, 7),
            (1024, 7),
            (1024, 7),
            (1024, 1),
            (1000, 1),
            (1000, 1),
        ];
        shapes.iter().enumerate().map(|(step, &(c, hw))| req(act(c, hw), step, step + 1)).collect()
    }

    /// A ResNet-like kernel sequence: a stem, then basic blocks whose input
    /// (the skip connection) stays live until the residual add, and
    /// downsampling blocks whose skip goes through a 1x1 projection.
    fn resnet_like(bottleneck: bool) -> Vec<BufferReq> {
        let mut reqs = Vec::new();
        let mut step = 0;
        // stem conv 7x7/2 -> 64x112x112, maxpool -> 64x56x56
        reqs.push(req(act(64, 112), step, step + 1));
        step += 1;
        // `x` is the current activation, written at step `x_first`.
        let mut x_size = act(64, 56);
        let mut x_first = step;
        step += 1;
        let stages = [(64, 56, 3), (128, 28, 4), (256, 14, 6), (512, 7, 3)];
        for (si, &(c, hw, blocks)) in stages.iter().enumerate() {
            for b in 0..blocks {
                // The first block of a stage changes the shape, so its skip
                // goes through a projection (always in bottleneck stacks).
                let down = b == 0 && (si > 0 || bottleneck);
                let out = if bottleneck { act(4 * c, hw) } else { act(c, hw) };
                let mid = act(c, hw);
                // conv1 reads x at `step`.
                let t1_first = step;
                if bottleneck {
                    // 1x1 reduce, 3x3, 1x1 expand
                    reqs.push(req(mid, t1_first, t1_first + 1));
                    reqs.push(req(mid, t1_first + 1, t1_first + 2));
                    reqs.push(req(out, t1_first + 2, t1_first + 3 + usize::from(down)));
                    step = t1_first + 3;
                } else {
                    reqs.push(req(mid, t1_first, t1_first + 1));
                    reqs.push(req(out, t1_first + 1, t1_first + 2 + usize::from(down)));
                    step = t1_first + 2;
                }
                let skip_last = if down {
                    // 1x1 projection of x, then the add reads it.
                    reqs.push(req(out, step, step + 1));
                    step += 1;
                    step - 1
                } else {
                    step
                };
                // x: from its producer to the projection or the add.
                reqs.push(req(x_size, x_first, skip_last));
                // The add writes the block's output at `step`.
                x_size = out;
                x_first = step;
                step += 1;
            }
        }
        // global average pool, fc
        reqs.push(req(x_size, x_first, step));
        reqs.push(req(act(if bottleneck { 2048 } else { 512 }, 1), step, step + 1));
        reqs.push(req(4 * 1000, step + 1, step + 2));
        reqs
    }

    #[test]
    fn cnn_chain_is_near_optimal() {
        let reqs = cnn_chain();
        let plan = plan_ok(&reqs);
        eprintln!("cnn chain: arena {} lower bound {} ratio {:.4}", plan.arena_bytes, plan.lower_bound, plan.ratio());
        assert!(plan.ratio() <= 1.05, "ratio {}", plan.ratio());
    }

    #[test]
    fn resnet_like_sequences_are_near_optimal() {
        for bottleneck in [false, true] {
            let reqs = resnet_like(bottleneck);
            assert!(reqs.iter().any(|r| r.last - r.first >= 3), "has long skips");
            let plan = plan_ok(&reqs);
            eprintln!(
                "resnet-like (bottleneck {bottleneck}, {} buffers): arena {} lower bound {} ratio {:.4}",
                reqs.len(),
                plan.arena_bytes,
                plan.lower_bound,
                plan.ratio()
            );
            assert!(plan.ratio() <= 1.05, "ratio {}", plan.ratio());
        }
    }

    /// Chains and skip-connected chains with random sizes: each activation is
    /// live 2 steps, every k-th one also feeds a later add (live 3-4 steps).
    #[test]
    fn random_cnn_like_sequences_are_near_optimal() {
        let mut rng = Rng(0x5EED);
        let mut worst: f64 = 1.0;
        let mut total = 0.0;
        let mut over = 0;
        let cases = 300u32;
        for case in 0..cases {
            let n = rng.range(8, 60);
            let skip_every = if case % 2 == 0 { usize::MAX } else { rng.range(2, 4) };
            let mut reqs = Vec::with_capacity(n);
            for s in 0..n {
                // Sizes vary like CNN activations: powers of two times a few
                // channel multiples, then a random jitter.
                let base = 64 << rng.range(0, 12);
                let size = base * rng.range(1, 3) + rng.range(0, 63) * 64;
                let last = if s % skip_every == 0 { s + rng.range(2, 3) } else { s + 1 };
                reqs.push(req(size, s, last));
            }
            let plan = plan_ok(&reqs);
            worst = worst.max(plan.ratio());
            total += plan.ratio();
            over += usize::from(plan.ratio() > 1.05);
        }
        let mean = total / f64::from(cases);
        eprintln!("random CNN-like sequences: mean ratio {mean:.4}, worst {worst:.4}, {over}/{cases} above 1.05");
        assert!(mean <= 1.01, "mean ratio {mean}");
        assert!(over * 100 <= cases as usize, "{over}/{cases} above 1.05");
    }

    /// Random requests of every shape: each plan verifies, and the invariants
    /// are rechecked here independently of `verify`.
    #[test]
    fn random_plans_satisfy_the_invariants() {
        let mut rng = Rng(42);
        let mut worst: f64 = 1.0;
        for case in 0..2000 {
            let n = rng.range(0, 40);
            let steps = rng.range(1, 30);
            let reqs: Vec<BufferReq> = (0..n)
                .map(|_| {
                    let first = rng.range(0, steps);
                    let last = first + rng.range(0, if case % 3 == 0 { steps } else { 3 });
                    let size = match rng.range(0, 9) {
                        0 => 0,
                        1 => rng.range(1, 8),
                        2..=5 => rng.range(1, 4096),
                        _ => rng.range(1, 1 << 20),
                    };
                    BufferReq::new(size, 1 << rng.range(0, 7), first, last)
                })
                .collect();
            let plan = plan_memory(&reqs).unwrap();
            if let Err(e) = plan.verify(&reqs) {
                panic!("case {case}: {e}\n{reqs:?}\n{plan:?}");
            }
            check_independently(&reqs, &plan);
            worst = worst.max(plan.ratio());
        }
        eprintln!("random requests: worst ratio {worst:.4}");
    }

    /// Brute-force restatement of the plan invariants.
    fn check_independently(reqs: &[BufferReq], plan: &MemoryPlan) {
        assert_eq!(plan.offsets.len(), reqs.len());
        let size = |r: &BufferReq| r.size.div_ceil(r.align) * r.align;
        let mut high = 0;
        for (r, &o) in reqs.iter().zip(&plan.offsets) {
            assert_eq!(o % r.align, 0, "aligned");
            high = high.max(o + size(r));
        }
        assert_eq!(plan.arena_bytes, high, "arena = max(offset + size)");
        for (i, a) in reqs.iter().enumerate() {
            for (j, b) in reqs.iter().enumerate().skip(i + 1) {
                if a.first <= b.last && b.first <= a.last && size(a) > 0 && size(b) > 0 {
                    let (oa, ob) = (plan.offsets[i], plan.offsets[j]);
                    assert!(oa + size(a) <= ob || ob + size(b) <= oa, "{i} and {j} overlap");
                }
            }
        }
        let max_step = reqs.iter().map(|r| r.last).max().unwrap_or(0);
        let lb = (0..=max_step)
            .map(|s| reqs.iter().filter(|r| r.first <= s && s <= r.last).map(size).sum())
            .max()
            .unwrap_or(0);
        assert_eq!(plan.lower_bound, lb, "lower bound");
        assert!(plan.arena_bytes >= plan.lower_bound);
    }

    /// Every candidate strategy, not just the winner, yields a valid plan.
    #[test]
    fn every_strategy_is_valid() {
        let mut rng = Rng(99);
        for _ in 0..300 {
            let n = rng.range(1, 30);
            let reqs: Vec<BufferReq> = (0..n)
                .map(|_| {
                    let first = rng.range(0, 15);
                    BufferReq::new(rng.range(0, 3000), 1 << rng.range(0, 8), first, first + rng.range(0, 5))
                })
                .collect();
            let sizes = aligned_sizes(&reqs).unwrap();
            let lb = lower_bound_of(&reqs, &sizes).unwrap();
            for order in orders(&reqs, &sizes) {
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "order is a permutation");
                for fit in [Fit::First, Fit::Best] {
                    let (offsets, arena_bytes) = place(&reqs, &sizes, &order, fit).unwrap();
                    let plan = MemoryPlan { offsets, arena_bytes, lower_bound: lb };
                    plan.verify(&reqs).unwrap();
                }
            }
        }
    }
}
