//! The compute pool: every decode and kernel runs here, on tokio's blocking pool, never on
//! the async workers.
//!
//! - At most `workers` jobs compute at once: jobs wait in one queue, and up to `workers`
//!   *drainers* (closures on tokio's blocking pool) take them in order.
//! - At most `queue` requests wait for a worker; past that, 503 `overloaded`.
//! - Each request has a deadline: waiting plus computing past it is 503 `timeout`. When the
//!   request's future ends without the result (deadline passed, client gone), the job's
//!   cancellation flag is raised: a job still queued is skipped and a running one stops at
//!   its next checkpoint.
//! - A panic inside a job becomes a 500 problem; the drainer and the server go on.
//! - Small requests ([`Pool::run_small`]) go ahead of the others: a request of a few elements
//!   does not wait behind large decodes (its wait would be theirs, not its own work). Large
//!   ones are not starved: small jobs are short, and how many wait is bounded by the queue.
//!
//! Why drainers rather than one `spawn_blocking` per job: waking a sleeping thread and
//! letting it sleep again costs more CPU than decoding and computing a small request. A
//! drainer that has just finished a job takes the next one from the queue without sleeping,
//! and one of them waits [`LINGER`] for a next job (spinning) before handing its thread back
//! to the blocking pool; under load a small request then costs no thread wake-up at all
//! (BENCHMARKS.md has the figures).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::error::{ApiError, Code};

/// How long an idle drainer waits for a next job, spinning, before it returns its thread to
/// the blocking pool. Shorter loses the saving at moderate loads; a yielding wait instead of
/// a spin lengthened the tail latency in measurements: the scheduler then ranks the drainer
/// last once it has work again.
const LINGER: Duration = Duration::from_micros(20);

/// A request whose body is at most this many bytes is small: [`Pool::run_small`].
pub const SMALL_BODY: usize = 64 << 10;

/// A request whose body is at most this many bytes is decoded on the async worker, and then
/// computed there too when its work is at most [`INLINE_WORK`] (see [`work_bound`]). Handing
/// a job to a pool thread and waking the request again costs more CPU than a request of a few
/// hundred elements takes to decode and compute; at these bounds the slowest loss keeps an
/// async worker for tens of microseconds (BENCHMARKS.md has the figures).
pub const INLINE_BODY: usize = 8 << 10;

/// The most work (broadcast elements, [`work_bound`]) computed on the async worker.
pub const INLINE_WORK: usize = 1024;

thread_local! {
    /// The largest size seen at each dimension, counted from the last, while [`work_bound`]
    /// runs.
    static DIMS: std::cell::RefCell<Option<Vec<usize>>> = const { std::cell::RefCell::new(None) };
}

/// Notes a decoded tensor's shape for the [`work_bound`] around its decode (nothing
/// otherwise).
pub fn note_shape(shape: &[usize]) {
    DIMS.with(|d| {
        if let Some(dims) = d.borrow_mut().as_mut() {
            for (i, &n) in shape.iter().rev().enumerate() {
                match dims.get_mut(i) {
                    Some(m) => *m = (*m).max(n),
                    None => dims.push(n),
                }
            }
        }
    });
}

/// Runs `decode`, returning its result and a bound on the work of computing what it decoded:
/// the size of the broadcast of all the tensors it decoded, their dimensions aligned from the
/// last (as broadcasting aligns them). No loss does more than a few operations per element of
/// that broadcast, and it is never less than the elements decoded: a shape rule that aligns
/// dimensions otherwise (a class dimension, a batch of targets) only makes it larger.
pub fn work_bound<R>(decode: impl FnOnce() -> R) -> (R, usize) {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            DIMS.with(|d| d.borrow_mut().take());
        }
    }
    DIMS.with(|d| *d.borrow_mut() = Some(Vec::new()));
    let disarm = Disarm;
    let r = decode();
    let dims = DIMS.with(|d| d.borrow_mut().take()).unwrap_or_default();
    drop(disarm);
    let work = dims.iter().fold(1usize, |w, &n| w.saturating_mul(n.max(1)));
    (r, work)
}

/// Counts of the pool's state, for readiness and metrics.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Requests waiting for a worker.
    pub queued: AtomicUsize,
    /// Jobs computing now.
    pub running: AtomicUsize,
}

/// A job as the drainers see it: it sends its own result.
type Job = Box<dyn FnOnce() + Send>;

/// The queue and the drainers' counts, under one lock.
#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Small requests' jobs, taken before `jobs`.
    small: VecDeque<Job>,
    /// Drainers on the blocking pool (running a job or about to take one).
    active: usize,
    /// Drainers running a job.
    busy: usize,
    /// Whether a drainer is waiting for a next job (at most one waits).
    lingering: bool,
}

impl State {
    fn len(&self) -> usize {
        self.jobs.len() + self.small.len()
    }

    fn pop(&mut self) -> Option<Job> {
        self.small.pop_front().or_else(|| self.jobs.pop_front())
    }
}

struct Shared {
    state: Mutex<State>,
    /// The queue's length, read without the lock by the waiting drainer.
    pending: AtomicUsize,
    workers: usize,
    queue: usize,
    gauges: Arc<Gauges>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code holding the lock can panic; a poisoned lock would still hold sound counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the queue's length to the waiting drainer and the `queued` gauge (the jobs
    /// that no free worker is about to take).
    fn publish(&self, s: &State) {
        let len = s.len();
        self.pending.store(len, Ordering::SeqCst);
        let free = self.workers.saturating_sub(s.busy);
        self.gauges
            .queued
            .store(len.saturating_sub(free), Ordering::SeqCst);
    }
}

/// The bounded compute pool.
pub struct Pool {
    shared: Arc<Shared>,
    timeout: Duration,
    draining: AtomicBool,
    /// Live counts.
    pub gauges: Arc<Gauges>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.shared.workers)
            .field("queue", &self.shared.queue)
            .field("timeout", &self.timeout)
            .field("gauges", &self.gauges)
            .finish_non_exhaustive()
    }
}

/// Decrements a gauge when dropped.
struct Count(Arc<Gauges>, fn(&Gauges) -> &AtomicUsize);

impl Count {
    fn new(g: &Arc<Gauges>, f: fn(&Gauges) -> &AtomicUsize) -> Self {
        f(g).fetch_add(1, Ordering::SeqCst);
        Count(g.clone(), f)
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
    }
}

/// Raises a job's cancellation flag when the request's future is dropped (client gone, or
/// deadline passed): a queued job is then skipped and a running one stops at its next
/// checkpoint.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Pool {
    /// A pool of `workers` concurrent jobs, `queue` waiting requests and a per-request
    /// `timeout`.
    pub fn new(workers: usize, queue: usize, timeout: Duration) -> Self {
        let gauges = Arc::<Gauges>::default();
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                pending: AtomicUsize::new(0),
                workers: workers.max(1),
                queue,
                gauges: gauges.clone(),
            }),
            timeout,
            draining: AtomicBool::new(false),
            gauges,
        }
    }

    /// Whether the pool accepts work (false once shutdown has begun).
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }

    /// Marks the pool as draining: `/readyz` answers 503 from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The deadline of a request that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs `job` on a worker within a new request's deadline.
    pub async fn run<R, F>(&self, job: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R, ApiError> + Send + 'static,
    {
        self.run_until(self.deadline(), true, job).await
    }

    /// Runs `job` on a worker by `deadline`. With `admit`, the request first needs a place in
    /// the queue (503 `overloaded` when full); the jobs of an admitted batch skip that check
    /// and simply wait their turn for a worker.
    pub async fn run_until<R, F>(
        &self,
        deadline: Instant,
        admit: bool,
        job: F,
    ) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R, ApiError> + Send + 'static,
    {
        self.run_lane(deadline, admit, false, job).await
    }

    /// [`Pool::run_until`] for a small request (`small`): its job is taken before the queued
    /// jobs of other requests.
    pub async fn run_small<R, F>(
        &self,
        deadline: Instant,
        small: bool,
        job: F,
    ) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R, ApiError> + Send + 'static,
    {
        self.run_lane(deadline, true, small, job).await
    }

    async fn run_lane<R, F>(
        &self,
        deadline: Instant,
        admit: bool,
        small: bool,
        job: F,
    ) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce() -> Result<R, ApiError> + Send + 'static,
    {
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gauges = self.gauges.clone();
        let boxed: Job = Box::new(move || {
            if cancel.load(Ordering::SeqCst) {
                return; // nobody waits for it any more
            }
            let running = Count::new(&gauges, |g| &g.running);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lossd_kernels::cancel::with_flag(cancel, job)
            }));
            drop(running); // before the waiter can see the result
            let _ = tx.send(result);
        });
        self.submit(boxed, admit, small)?;
        match timeout_at(deadline, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(panic))) => Err(ApiError::internal(format!(
                "a compute job panicked: {}",
                panic_message(panic)
            ))),
            Ok(Err(_)) => Err(ApiError::internal("a compute job was dropped")),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Queues `job`, refusing it when `admit` and the queue is full, and starts a drainer on
    /// the blocking pool unless one is free to take it.
    fn submit(&self, job: Job, admit: bool, small: bool) -> Result<(), ApiError> {
        let shared = &self.shared;
        let spawn = {
            let mut s = shared.lock();
            let free = shared.workers.saturating_sub(s.busy);
            if admit && s.len() >= shared.queue + free {
                return Err(ApiError::new(
                    Code::Overloaded,
                    format!(
                        "the compute queue is full ({} requests waiting); retry after a second",
                        shared.queue
                    ),
                ));
            }
            if small {
                s.small.push_back(job);
            } else {
                s.jobs.push_back(job);
            }
            shared.publish(&s);
            // Drainers not running a job will take queued jobs; start another while the
            // queue holds more than they can take and a worker is left.
            let spawn = s.active < shared.workers && s.len() > s.active - s.busy;
            if spawn {
                s.active += 1;
            }
            spawn
        };
        if spawn {
            let shared = shared.clone();
            // At runtime shutdown the drainer may never start; nothing waits by then.
            drop(tokio::task::spawn_blocking(move || drain(&shared)));
        }
        Ok(())
    }

    fn timed_out(&self) -> ApiError {
        ApiError::new(
            Code::Timeout,
            format!(
                "the request ran past the time limit of {:.3} s",
                self.timeout.as_secs_f64()
            ),
        )
    }
}

/// A drainer: runs queued jobs one after another. When the queue is empty, one drainer at a
/// time waits [`LINGER`] for another job; the others, and it after that, hand their thread
/// back to the blocking pool.
fn drain(shared: &Shared) {
    loop {
        let job = {
            let mut s = shared.lock();
            match s.pop() {
                Some(job) => {
                    s.busy += 1;
                    shared.publish(&s);
                    job
                }
                None if s.lingering => {
                    s.active -= 1;
                    return;
                }
                None => {
                    s.lingering = true;
                    drop(s);
                    let until = std::time::Instant::now() + LINGER;
                    while shared.pending.load(Ordering::SeqCst) == 0
                        && std::time::Instant::now() < until
                    {
                        std::hint::spin_loop();
                    }
                    let mut s = shared.lock();
                    s.lingering = false;
                    if s.len() == 0 {
                        s.active -= 1;
                        return;
                    }
                    continue;
                }
            }
        };
        // The job catches its own panics and sends its own result.
        job();
        let mut s = shared.lock();
        s.busy -= 1;
        shared.publish(&s);
    }
}

/// The text of a panic payload.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a job that computes until `release` is sent, and waits until it runs; the job
    /// answers 1.
    async fn occupy(
        pool: &Arc<Pool>,
    ) -> (
        tokio::task::JoinHandle<Result<i32, ApiError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let job = tokio::spawn(async move {
            p.run(move || {
                gate.recv().ok();
                Ok(1)
            })
            .await
        });
        while pool.gauges.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        (job, release)
    }

    #[test]
    fn the_work_bound_is_the_broadcast_of_the_shapes_decoded() {
        let ((), w) = work_bound(|| {
            note_shape(&[32, 10]);
            note_shape(&[32]);
        });
        assert_eq!(w, 32 * 32);
        let ((), w) = work_bound(|| {
            note_shape(&[100, 1]);
            note_shape(&[1, 100]);
            note_shape(&[]);
        });
        assert_eq!(w, 100 * 100);
        // Outside a bound, shapes are not noted; a bound over nothing is one element.
        note_shape(&[1 << 20]);
        assert_eq!(work_bound(|| ()).1, 1);
    }

    #[tokio::test]
    async fn a_panic_becomes_a_500_and_the_pool_goes_on() {
        let pool = Pool::new(1, 4, Duration::from_secs(5));
        let e = pool.run::<(), _>(|| panic!("boom")).await.unwrap_err();
        assert_eq!(e.code, Code::Internal);
        assert_eq!(pool.run(|| Ok(7)).await.unwrap(), 7);
        assert_eq!(pool.gauges.running.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_full_queue_is_overloaded() {
        let pool = Arc::new(Pool::new(1, 1, Duration::from_secs(30)));
        let (first, release) = occupy(&pool).await;
        let p = pool.clone();
        let second = tokio::spawn(async move { p.run(|| Ok(2)).await });
        while pool.gauges.queued.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let third = pool.run(|| Ok(3)).await.unwrap_err();
        assert_eq!(third.code, Code::Overloaded);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_timed_out_job_is_cancelled_at_its_next_checkpoint() {
        let pool = Pool::new(1, 1, Duration::from_millis(100));
        let (tx, rx) = std::sync::mpsc::channel();
        let e = pool
            .run::<(), _>(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                    if let Err(e) = lossd_kernels::cancel::checkpoint() {
                        tx.send(()).unwrap();
                        return Err(e.into());
                    }
                }
            })
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::Timeout);
        rx.recv_timeout(Duration::from_secs(2))
            .expect("the job saw the cancellation");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_jobs_all_finish_off_the_async_workers_and_never_more_than_workers_at_once() {
        let pool = Arc::new(Pool::new(2, 10_000, Duration::from_secs(30)));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..2000u64 {
            let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let asked_on = std::thread::current().id();
                let (ran_on, value) = pool
                    .run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        let spin = std::time::Instant::now();
                        while spin.elapsed() < Duration::from_micros(i % 7) {}
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok((std::thread::current().id(), i * 3))
                    })
                    .await
                    .unwrap();
                assert_ne!(ran_on, asked_on);
                assert_eq!(value, i * 3);
            }));
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?}");
        assert_eq!(pool.gauges.running.load(Ordering::SeqCst), 0);
        assert_eq!(pool.gauges.queued.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_small_request_goes_ahead_of_queued_large_ones() {
        let pool = Arc::new(Pool::new(1, 8, Duration::from_secs(30)));
        let (first, release) = occupy(&pool).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (i, small) in [(1, false), (2, false), (3, true)] {
            let (p, o) = (pool.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                p.run_small(p.deadline(), small, move || {
                    o.lock().unwrap().push(i);
                    Ok(i)
                })
                .await
            }));
            while pool.gauges.queued.load(Ordering::SeqCst) < i {
                tokio::task::yield_now().await;
            }
        }
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [3, 1, 2]);
    }

    #[tokio::test]
    async fn a_job_whose_request_is_gone_is_skipped() {
        let pool = Arc::new(Pool::new(1, 4, Duration::from_secs(30)));
        let (first, release) = occupy(&pool).await;
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let p = pool.clone();
        let gone = tokio::spawn(async move {
            p.run(move || {
                r.store(true, Ordering::SeqCst);
                Ok(2)
            })
            .await
        });
        while pool.gauges.queued.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gone.abort(); // the client went away
        assert!(gone.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(pool.run(|| Ok(3)).await.unwrap(), 3);
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(pool.gauges.queued.load(Ordering::SeqCst), 0);
    }
}
