//! A small persistent thread pool for the executor's parallel loops.
//!
//! [`ThreadPool::run`] splits task indices `0..n_tasks` statically into
//! contiguous chunks, one per thread ([`ThreadPool::split`]); the calling
//! thread works as thread 0 and the pool's workers as threads `1..threads()`.
//! Static splitting suits the executor: its loops are regular, and a thread
//! always gets the same chunk of the same loop, which keeps caches warm and
//! makes per-thread scratch indexing (by thread index) trivial.
//!
//! Workers live as long as the pool. Between jobs they spin briefly on the job
//! counter, then park on a condition variable, so an idle pool costs no CPU.
//!
//! `run` behaves like a scoped thread: the closure may borrow from the
//! caller's stack, because `run` does not return (or unwind) before every
//! worker has finished with it. A panicking task is caught on its thread; the
//! other chunks still run to completion, then `run` re-raises the first panic
//! on the caller (the caller's own panic if it had one). Workers survive, so
//! the pool remains usable afterwards.
//!
//! Concurrent `run` calls from different threads are serialised. A `run` called
//! from inside one of the same pool's tasks (directly) executes all its tasks
//! inline on the current thread, with that thread's index, instead of
//! deadlocking. Calling back into a pool from a task of *another* pool that is
//! itself running inside the first pool's task can still deadlock: don't.

use std::any::Any;
use std::cell::Cell;
use std::hint;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

/// How many times a worker or the caller polls before parking.
const SPIN_ITERS: u32 = 1 << 12;

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A pool needs at least one thread (the caller).
    #[error("a thread pool needs at least one thread, got 0")]
    ZeroThreads,
    /// The operating system refused to start a worker.
    #[error("cannot spawn worker thread {index}: {source}")]
    Spawn {
        /// The worker's thread index.
        index: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A pool of `threads()` threads: the caller plus `threads() - 1` workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Serialises concurrent `run` calls from different threads.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.n_threads).finish_non_exhaustive()
    }
}

/// State shared by the caller and the workers.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a new job is published or the pool shuts down.
    work: Condvar,
    /// Signalled when the last worker of a job finishes.
    done: Condvar,
    /// Mirror of `State::generation` for lock-free spinning.
    generation: AtomicU64,
    /// Workers that have not finished the current job's chunk yet.
    pending: AtomicUsize,
}

struct State {
    /// Incremented for every published job.
    generation: u64,
    job: Option<Job>,
    /// The first panic payload of the current job caught on a worker.
    panic: Option<Box<dyn Any + Send>>,
    shutdown: bool,
}

/// A published job: the closure (lifetime erased) and how to split it.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize, usize) + Sync + 'static),
    n_tasks: usize,
    n_chunks: usize,
}

// SAFETY: `f` points to a `Sync` closure, so sharing it across threads is
// fine; the pointer is only dereferenced while `ThreadPool::run` keeps the
// closure alive (see `Job::new`).
#[allow(unsafe_code)]
unsafe impl Send for Job {}

impl Job {
    /// Erases the closure's lifetime so it can be handed to the workers.
    ///
    /// Soundness rests on `ThreadPool::run`: a worker calls [`Job::run_chunk`]
    /// only for a job in which it owns a chunk, and `run` waits for all those
    /// workers (`pending == 0`) before it returns or unwinds, so the closure
    /// outlives every call.
    #[allow(unsafe_code)]
    fn new(f: &(dyn Fn(usize, usize) + Sync), n_tasks: usize, n_chunks: usize) -> Job {
        let f: *const (dyn Fn(usize, usize) + Sync + '_) = f;
        // SAFETY: only the trait object's lifetime bound changes; both fat
        // pointers have the same layout. See the doc comment for why the
        // pointee outlives its uses.
        let f = unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize, usize) + Sync + '_),
                *const (dyn Fn(usize, usize) + Sync + 'static),
            >(f)
        };
        Job { f, n_tasks, n_chunks }
    }

    /// Runs thread `t`'s chunk, catching a panic.
    #[allow(unsafe_code)]
    fn run_chunk(&self, t: usize) -> Result<(), Box<dyn Any + Send>> {
        let range = chunk(self.n_tasks, self.n_chunks, t);
        // SAFETY: the caller of `run` is blocked until this worker decrements
        // `pending`, which happens after this call returns; the closure is
        // alive and shared (`Sync`).
        let f = unsafe { &*self.f };
        panic::catch_unwind(AssertUnwindSafe(|| {
            for i in range {
                f(i, t);
            }
        }))
    }
}

thread_local! {
    /// The pool (by `Shared` address) and thread index the current thread is
    /// working for, if any.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// Restores `CURRENT` when a `run` on the calling thread ends, even by unwinding.
struct CurrentGuard(Option<(usize, usize)>);

impl CurrentGuard {
    fn enter(id: usize, t: usize) -> CurrentGuard {
        CurrentGuard(CURRENT.with(|c| c.replace(Some((id, t)))))
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // User code never runs under these locks, so poisoning carries no meaning.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Chunk `t` of `len` items split into `parts` (`1 <= parts <= len`) chunks:
/// the first `len % parts` chunks get one item more.
fn chunk(len: usize, parts: usize, t: usize) -> Range<usize> {
    let (base, rem) = (len / parts, len % parts);
    let start = t * base + t.min(rem);
    start..start + base + usize::from(t < rem)
}

impl ThreadPool {
    /// A pool of `n_threads` threads: the caller and `n_threads - 1` spawned
    /// workers (none for `n_threads == 1`). Fails for 0 or if a worker cannot
    /// be spawned (workers already started are shut down).
    pub fn new(n_threads: usize) -> Result<ThreadPool, PoolError> {
        if n_threads == 0 {
            return Err(PoolError::ZeroThreads);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, panic: None, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        });
        let mut pool =
            ThreadPool { shared, workers: Vec::with_capacity(n_threads - 1), n_threads, run_lock: Mutex::new(()) };
        for index in 1..n_threads {
            let shared = Arc::clone(&pool.shared);
            let handle = thread::Builder::new()
                .name(format!("strata-worker-{index}"))
                .spawn(move || worker(&shared, index))
                .map_err(|source| PoolError::Spawn { index, source })?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// The number of threads, the caller included.
    pub fn threads(&self) -> usize {
        self.n_threads
    }

    /// Splits `0..len` into at most `n_threads` contiguous, non-empty chunks
    /// whose lengths differ by at most one (longer chunks first). Returns no
    /// chunks for `len == 0`; `n_threads == 0` is treated as 1.
    pub fn split(len: usize, n_threads: usize) -> Vec<Range<usize>> {
        let parts = n_threads.max(1).min(len);
        (0..parts).map(|t| chunk(len, parts, t)).collect()
    }

    /// [`ThreadPool::split`] over this pool's threads: the chunks `run` uses.
    pub fn chunks(&self, len: usize) -> Vec<Range<usize>> {
        Self::split(len, self.n_threads)
    }

    /// Runs `f(task, thread)` for every task in `0..n_tasks` and returns when
    /// all are done. Thread `t` runs chunk `t` of
    /// [`chunks(n_tasks)`](ThreadPool::chunks) in increasing task order; the
    /// caller is thread 0. Tasks with the same thread index never run
    /// concurrently.
    ///
    /// If tasks panic, the other chunks still finish, then the first panic is
    /// resumed on the caller; the pool stays usable. See the module docs for
    /// nested and concurrent calls.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        let id = Arc::as_ptr(&self.shared) as usize;
        if let Some((cur, t)) = CURRENT.with(Cell::get)
            && cur == id
        {
            // Nested inside one of our own tasks: the other threads may be busy
            // with the outer job, so run everything here.
            for i in 0..n_tasks {
                f(i, t);
            }
            return;
        }
        let _serial = lock(&self.run_lock);
        let _current = CurrentGuard::enter(id, 0);
        let n_chunks = self.n_threads.min(n_tasks);
        if n_chunks == 1 {
            for i in 0..n_tasks {
                f(i, 0);
            }
            return;
        }

        let job = Job::new(f, n_tasks, n_chunks);
        let shared = &*self.shared;
        {
            let mut st = lock(&shared.state);
            st.generation += 1;
            st.job = Some(job);
            st.panic = None;
            shared.pending.store(n_chunks - 1, Ordering::Relaxed);
            shared.generation.store(st.generation, Ordering::Release);
        }
        shared.work.notify_all();

        let mine = job.run_chunk(0);

        // Wait for the workers even if our chunk panicked: they borrow `f`.
        let mut spins = 0;
        while shared.pending.load(Ordering::Acquire) != 0 && spins < SPIN_ITERS {
            hint::spin_loop();
            spins += 1;
        }
        let theirs = {
            let mut st = lock(&shared.state);
            while shared.pending.load(Ordering::Acquire) != 0 {
                st = shared.done.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.job = None;
            st.panic.take()
        };
        if let Err(payload) = mine {
            panic::resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            panic::resume_unwind(payload);
        }
    }
}

/// A worker's loop: wait for a new generation, run its chunk, report.
fn worker(shared: &Shared, t: usize) {
    CURRENT.with(|c| c.set(Some((std::ptr::from_ref(shared) as usize, t))));
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while shared.generation.load(Ordering::Acquire) == seen && spins < SPIN_ITERS {
            hint::spin_loop();
            spins += 1;
        }
        let job = {
            let mut st = lock(&shared.state);
            while st.generation == seen && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        // Threads past the last chunk sit this job out; `pending` does not count them.
        let Some(job) = job.filter(|j| t < j.n_chunks) else {
            continue;
        };
        if let Err(payload) = job.run_chunk(t) {
            let mut st = lock(&shared.state);
            st.panic.get_or_insert(payload);
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Take the lock so the notification cannot slip in between the
            // caller's check of `pending` and its wait.
            drop(lock(&shared.state));
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    /// Stops and joins the workers.
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        for handle in self.workers.drain(..) {
            // Tasks' panics are caught inside the worker, so a join error
            // cannot carry anything useful; ignore it.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::thread::ThreadId;

    fn panic_message(payload: &(dyn Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn zero_threads_is_an_error() {
        let e = ThreadPool::new(0).unwrap_err();
        assert!(matches!(e, PoolError::ZeroThreads));
        assert_eq!(e.to_string(), "a thread pool needs at least one thread, got 0");
    }

    #[test]
    fn threads_accessor() {
        for n in 1..=5 {
            let pool = ThreadPool::new(n).unwrap();
            assert_eq!(pool.threads(), n);
            assert_eq!(pool.workers.len(), n - 1);
        }
    }

    #[test]
    fn split_is_contiguous_even_and_non_empty() {
        assert!(ThreadPool::split(0, 4).is_empty());
        assert_eq!(ThreadPool::split(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(ThreadPool::split(2, 8), vec![0..1, 1..2]);
        assert_eq!(ThreadPool::split(5, 0), vec![0..5]);
        for len in 0..80 {
            for n in 0..12 {
                let chunks = ThreadPool::split(len, n);
                assert_eq!(chunks.len(), n.max(1).min(len), "len {len} n {n}");
                let mut next = 0;
                for c in &chunks {
                    assert_eq!(c.start, next, "contiguous");
                    assert!(!c.is_empty(), "non-empty");
                    next = c.end;
                }
                assert_eq!(next, len, "covers 0..len");
                if let (Some(max), Some(min)) =
                    (chunks.iter().map(|c| c.len()).max(), chunks.iter().map(|c| c.len()).min())
                {
                    assert!(max - min <= 1, "even");
                }
                assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()), "longer first");
            }
        }
    }

    #[test]
    fn parallel_sum_matches_sequential() {
        for n_threads in 1..=6 {
            let pool = ThreadPool::new(n_threads).unwrap();
            for n_tasks in [0, 1, 2, 3, 7, 100, 1000, 12345] {
                let sum = AtomicU64::new(0);
                pool.run(n_tasks, &|i, _| {
                    sum.fetch_add((i as u64) * (i as u64) + 1, Ordering::Relaxed);
                });
                let expected: u64 = (0..n_tasks as u64).map(|i| i * i + 1).sum();
                assert_eq!(sum.into_inner(), expected, "{n_threads} threads, {n_tasks} tasks");
            }
        }
    }

    #[test]
    fn each_task_runs_once_on_its_static_chunk() {
        let pool = ThreadPool::new(4).unwrap();
        let caller = thread::current().id();
        for n_tasks in [1, 3, 4, 5, 64, 1001] {
            let runs: Vec<AtomicU32> = (0..n_tasks).map(|_| AtomicU32::new(0)).collect();
            let owner: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(usize::MAX)).collect();
            let ids: Mutex<Vec<(usize, ThreadId)>> = Mutex::new(Vec::new());
            pool.run(n_tasks, &|i, t| {
                runs[i].fetch_add(1, Ordering::Relaxed);
                owner[i].store(t, Ordering::Relaxed);
                lock(&ids).push((t, thread::current().id()));
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
            for (t, range) in pool.chunks(n_tasks).into_iter().enumerate() {
                for i in range {
                    assert_eq!(owner[i].load(Ordering::Relaxed), t, "task {i}");
                }
            }
            // One OS thread per index, and index 0 is the caller.
            let ids = ids.into_inner().unwrap();
            for &(t, id) in &ids {
                assert!(ids.iter().all(|&(t2, id2)| (t == t2) == (id == id2)));
                if t == 0 {
                    assert_eq!(id, caller);
                }
            }
        }
    }

    #[test]
    fn single_thread_pool_runs_on_the_caller() {
        let pool = ThreadPool::new(1).unwrap();
        let caller = thread::current().id();
        let count = AtomicUsize::new(0);
        pool.run(50, &|_, t| {
            assert_eq!(t, 0);
            assert_eq!(thread::current().id(), caller);
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.into_inner(), 50);
    }

    #[test]
    fn borrows_from_the_callers_stack() {
        let pool = ThreadPool::new(3).unwrap();
        let input: Vec<u64> = (0..1000).collect();
        let out: Vec<Mutex<u64>> = (0..10).map(|_| Mutex::new(0)).collect();
        pool.run(10, &|i, _| {
            *lock(&out[i]) = input[i * 100..(i + 1) * 100].iter().sum();
        });
        let total: u64 = out.iter().map(|m| *lock(m)).sum();
        assert_eq!(total, input.iter().sum::<u64>());
    }

    #[test]
    fn many_tiny_jobs_do_not_deadlock() {
        let pool = ThreadPool::new(4).unwrap();
        let count = AtomicUsize::new(0);
        for k in 0..10_000 {
            pool.run(k % 9, &|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(count.into_inner(), (0..10_000).map(|k| k % 9).sum::<usize>());
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(4).unwrap();
        let done = AtomicUsize::new(0);
        let err = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(100, &|i, _| {
                if i == 77 {
                    panic!("task 77 failed");
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }))
        .unwrap_err();
        assert_eq!(panic_message(&*err), "task 77 failed");
        // Chunk 3 (75..100) stopped at the panic; the others all finished.
        assert_eq!(done.load(Ordering::Relaxed), 75 + 2);

        let sum = AtomicUsize::new(0);
        pool.run(100, &|i, _| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.into_inner(), 4950);
    }

    #[test]
    fn a_caller_panic_waits_for_the_workers() {
        let pool = ThreadPool::new(3).unwrap();
        let finished = AtomicUsize::new(0);
        let err = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(3, &|i, _| {
                if i == 0 {
                    panic!("caller chunk");
                }
                thread::sleep(std::time::Duration::from_millis(20));
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }))
        .unwrap_err();
        assert_eq!(panic_message(&*err), "caller chunk");
        assert_eq!(finished.load(Ordering::Relaxed), 2, "workers finished before the unwind");
    }

    #[test]
    fn every_thread_panicking_resumes_one_panic() {
        let pool = ThreadPool::new(4).unwrap();
        for _ in 0..50 {
            let err = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(8, &|_, t| panic!("thread {t}"));
            }))
            .unwrap_err();
            // The caller's own panic wins.
            assert_eq!(panic_message(&*err), "thread 0");
        }
        let count = AtomicUsize::new(0);
        pool.run(8, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.into_inner(), 8);
    }

    #[test]
    fn single_thread_panics_propagate_too() {
        let pool = ThreadPool::new(1).unwrap();
        let err = panic::catch_unwind(AssertUnwindSafe(|| pool.run(3, &|_, _| panic!("solo")))).unwrap_err();
        assert_eq!(panic_message(&*err), "solo");
        let count = AtomicUsize::new(0);
        pool.run(3, &|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.into_inner(), 3);
    }

    #[test]
    fn nested_runs_execute_inline_with_the_outer_thread_index() {
        let pool = ThreadPool::new(4).unwrap();
        let total = AtomicUsize::new(0);
        pool.run(8, &|_, outer_t| {
            let me = thread::current().id();
            pool.run(5, &|j, inner_t| {
                assert_eq!(inner_t, outer_t);
                assert_eq!(thread::current().id(), me);
                total.fetch_add(j, Ordering::Relaxed);
            });
        });
        assert_eq!(total.into_inner(), 8 * 10);
    }

    #[test]
    fn concurrent_callers_are_serialised() {
        let pool = ThreadPool::new(3).unwrap();
        let busy: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(0)).collect();
        let total = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.run(6, &|i, t| {
                            // No two tasks with the same thread index overlap.
                            assert_eq!(busy[t].fetch_add(1, Ordering::SeqCst), 0);
                            total.fetch_add(i, Ordering::Relaxed);
                            busy[t].fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.into_inner(), 4 * 200 * 15);
    }

    #[test]
    fn creating_and_dropping_pools_joins_workers() {
        for n in 1..=4 {
            for _ in 0..20 {
                let pool = ThreadPool::new(n).unwrap();
                let count = AtomicUsize::new(0);
                pool.run(n * 3, &|_, _| {
                    count.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(count.into_inner(), n * 3);
            }
        }
        // A pool that never ran a job shuts down too.
        drop(ThreadPool::new(8).unwrap());
    }

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadPool>();
    }
}
