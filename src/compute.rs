//! The compute pool: every decode and kernel runs here, on tokio's blocking pool, never on
//! the async workers.
//!
//! - At most `workers` jobs compute at once (a semaphore of worker permits).
//! - At most `queue` requests wait for a permit; past that, 503 `overloaded`.
//! - Each request has a deadline: waiting plus computing past it is 503 `timeout`, and the
//!   job's cancellation flag is raised so that kernels stop at their next checkpoint.
//! - A panic inside a job becomes a 500 problem; the worker thread and the server go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use crate::error::{ApiError, Code};

/// Counts of the pool's state, for readiness and metrics.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Requests waiting for a worker.
    pub queued: AtomicUsize,
    /// Jobs computing now.
    pub running: AtomicUsize,
}

/// The bounded compute pool.
#[derive(Debug)]
pub struct Pool {
    permits: Arc<Semaphore>,
    queue: usize,
    timeout: Duration,
    draining: AtomicBool,
    /// Live counts.
    pub gauges: Arc<Gauges>,
}

/// Decrements a gauge when dropped, so a cancelled request (client gone) is uncounted too.
struct Count(Arc<Gauges>, fn(&Gauges) -> &AtomicUsize);

impl Count {
    fn new(g: &Arc<Gauges>, f: fn(&Gauges) -> &AtomicUsize) -> (Self, usize) {
        let before = f(g).fetch_add(1, Ordering::SeqCst);
        (Count(g.clone(), f), before)
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// A pool of `workers` concurrent jobs, `queue` waiting requests and a per-request
    /// `timeout`.
    pub fn new(workers: usize, queue: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
            queue,
            timeout,
            draining: AtomicBool::new(false),
            gauges: Arc::default(),
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
        // A free worker is taken at once, with no queue accounting and no timer.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => self.wait_for_permit(deadline, admit).await?,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let gauges = self.gauges.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (_running, _) = Count::new(&gauges, |g| &g.running);
            lossd_kernels::cancel::with_flag(flag, job)
        });
        match timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => Err(ApiError::internal(format!(
                "a compute job panicked: {}",
                panic_message(e.into_panic())
            ))),
            Ok(Err(e)) => Err(ApiError::internal(format!("a compute job failed: {e}"))),
            Err(_) => {
                cancel.store(true, Ordering::SeqCst);
                Err(self.timed_out())
            }
        }
    }

    /// Waits in the queue for a worker permit, until the deadline; refuses when the queue is
    /// full (for admitted requests).
    async fn wait_for_permit(
        &self,
        deadline: Instant,
        admit: bool,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let (_waiting, before) = Count::new(&self.gauges, |g| &g.queued);
        if admit && before >= self.queue {
            return Err(ApiError::new(
                Code::Overloaded,
                format!(
                    "the compute queue is full ({} requests waiting); retry after a second",
                    self.queue
                ),
            ));
        }
        match timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_closed)) => Err(ApiError::internal("the compute pool is closed")),
            Err(_) => Err(self.timed_out()),
        }
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
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let p = pool.clone();
        let first = tokio::spawn(async move {
            p.run(move || {
                gate.recv().ok();
                Ok(1)
            })
            .await
        });
        while pool.gauges.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
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
}
