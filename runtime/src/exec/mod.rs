//! The executor: [`Executable`] and its building blocks.
//!
//! A compiled model is an ordered list of kernels plus its constants, a
//! [`MemoryPlan`] that places every temporary buffer in one arena, and a
//! [`ThreadPool`] that runs the kernels' parallel loops. This module holds the
//! parts that do not depend on the IR:
//!
//! - [`plan`]: liveness-based placement of temporary buffers in one arena
//!   ([`plan_memory`]), with the liveness lower bound to judge it by and a
//!   [`MemoryPlan::verify`] check for tests and debug builds;
//! - [`pool`]: a persistent thread pool with static splitting, whose
//!   [`ThreadPool::run`] borrows from the caller's stack like a scoped thread;
//! - [`executable`]: a lowered loops program bound to compiled kernels, with
//!   its memory plan; runs them in order over one arena.

pub mod executable;
pub mod plan;
pub mod pool;

pub use executable::{BufferInfo, BufferKind, ExecError, Executable, KernelFn, Step, byte_size};
pub use plan::{BufferReq, MemoryPlan, PlanError, liveness_lower_bound, plan_memory};
pub use pool::{PoolError, ThreadPool};
