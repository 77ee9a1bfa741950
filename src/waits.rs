//! The board of open drain waits: the long polls of `gracegate-wait` (issue 14), keyed by
//! the pod they ask about, and the leader's latest verdict for each.
//!
//! Every replica has a board; only the leader's is ever *leading*. A standby board answers
//! every ask "not leader" (the waiter backs off and asks again on a new connection, which the
//! Service may land on the leader). On the leader an ask parks until the watcher's tick
//! publishes a release for its pod, or until its timeout (at most [`MAX_POLL`]) with the
//! latest "not yet"; a release wakes every ask of that pod at once, and stays: the other
//! containers of the pod run their own waiter and are answered without waiting. Losing the
//! Lease answers every parked ask "not leader" at once and forgets the board.
//!
//! The watcher reads which pods are asked about ([`Board::asked`]) and describes their
//! targets each tick. A pod is remembered [`LINGER`] after its last ask: the waiter asks
//! again within a second or two of an answer, so in between its pod stays followed. A pod
//! that stops asking without a release is counted `deadline` in
//! `gracegate_drain_waits_total`: its waiter reached its deadline, or the pod died (a wait
//! that lost its way to the leader for `LINGER` is counted too, and again as a new wait when
//! it comes back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::metrics::{Metrics, WaitOutcomeLabels};
use crate::release::Verdict;

/// The longest a poll is held, whatever the waiter asks for: well under the waiter's 35 s
/// read timeout and the idle timeout of proxies on the way.
pub const MAX_POLL: Duration = Duration::from_secs(25);
/// `--max-drain-waits`' default: open asks held at once, over all pods.
pub const DEFAULT_MAX_WAITS: usize = 2048;
/// How long a pod is remembered after its last ask.
pub const LINGER: Duration = Duration::from_secs(60);

/// Which pod an ask is about: the waiter names it by namespace, name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What an ask is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The leader's verdict (a "not yet" when the poll's time ran out).
    Verdict(Verdict),
    /// This replica does not hold the Lease (or lost it while the ask was parked).
    NotLeader,
    /// Over `--max-drain-waits` open asks.
    Busy,
}

/// Before the leader has decided anything about a pod.
pub const UNDECIDED: Verdict = Verdict::NotYet("no-decision-yet");

pub struct Board {
    max: usize,
    metrics: Arc<Metrics>,
    leading: watch::Sender<bool>,
    /// A pod was asked about for the first time: the watcher may be idle.
    arrived: Notify,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    waits: HashMap<WaitKey, Wait>,
    open: usize,
}

struct Wait {
    verdict: watch::Sender<Verdict>,
    open: usize,
    last_asked: Instant,
}

// === impl Board ===

impl Board {
    /// A standby board holding at most `max` open asks.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Board {
        Board {
            max,
            metrics,
            leading: watch::Sender::new(false),
            arrived: Notify::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// This replica leads: asks are parked and answered from now on.
    pub fn lead(&self) {
        self.leading.send_replace(true);
    }

    /// This replica no longer leads: every parked ask is answered "not leader" at once, and
    /// the board forgets every pod (the next leader starts from its own describes).
    pub fn step_down(&self) {
        self.leading.send_replace(false);
        // Dropping the senders ends the parked asks' waits.
        self.inner().waits.clear();
    }

    /// Open asks, over all pods.
    pub fn open(&self) -> usize {
        self.inner().open
    }

    /// Ask about `key`, parked up to `timeout` (at most [`MAX_POLL`]) for a release.
    pub async fn ask(&self, key: WaitKey, timeout: Duration) -> Answer {
        let mut leading = self.leading.subscribe();
        if !*leading.borrow_and_update() {
            return Answer::NotLeader;
        }
        let mut verdict = {
            let mut inner = self.inner();
            if inner.open >= self.max {
                return Answer::Busy;
            }
            let now = Instant::now();
            let wait = inner.waits.entry(key.clone()).or_insert_with(|| {
                self.arrived.notify_one();
                Wait {
                    verdict: watch::Sender::new(UNDECIDED),
                    open: 0,
                    last_asked: now,
                }
            });
            wait.open += 1;
            wait.last_asked = now;
            let verdict = wait.verdict.subscribe();
            inner.open += 1;
            self.metrics.drain_waits_open.set(inner.open as i64);
            verdict
        };
        // Closes the ask however it ends, the client going away included.
        let _open = Open { board: self, key };
        let deadline = tokio::time::sleep(timeout.min(MAX_POLL));
        tokio::pin!(deadline);
        loop {
            let latest = *verdict.borrow_and_update();
            if latest.is_release() {
                return Answer::Verdict(latest);
            }
            tokio::select! {
                _ = &mut deadline => return Answer::Verdict(latest),
                changed = verdict.changed() => {
                    // The board forgot the pod: it stepped down.
                    if changed.is_err() {
                        return Answer::NotLeader;
                    }
                }
                _ = leading.wait_for(|l| !*l) => return Answer::NotLeader,
            }
        }
    }

    fn close(&self, key: &WaitKey) {
        let mut inner = self.inner();
        let now = Instant::now();
        if let Some(wait) = inner.waits.get_mut(key) {
            wait.open = wait.open.saturating_sub(1);
            wait.last_asked = now;
        } else {
            // Stepped down meanwhile: the count was kept for the asks still running.
        }
        inner.open = inner.open.saturating_sub(1);
        self.metrics.drain_waits_open.set(inner.open as i64);
    }

    /// Wait until a pod is asked about for the first time (a permit is kept when the watcher
    /// is busy elsewhere).
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// The pods asked about and not released yet.
    pub fn asked(&self) -> Vec<WaitKey> {
        let mut keys: Vec<WaitKey> = self
            .inner()
            .waits
            .iter()
            .filter(|(_, w)| !w.verdict.borrow().is_release())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Publish the leader's verdict for `key`. A release wakes the pod's asks and stays.
    /// Returns true when this is the pod's release (counted `released`); a pod no longer on
    /// the board, or already released, changes nothing.
    pub fn publish(&self, key: &WaitKey, verdict: Verdict) -> bool {
        if !self.is_leading() {
            return false;
        }
        let inner = self.inner();
        let Some(wait) = inner.waits.get(key) else {
            return false;
        };
        let released = wait.verdict.send_if_modified(|current| {
            if current.is_release() || *current == verdict {
                return false;
            }
            *current = verdict;
            true
        }) && verdict.is_release();
        if released {
            self.metrics
                .drain_waits
                .get_or_create(&WaitOutcomeLabels::RELEASED)
                .inc();
        }
        released
    }

    /// Forget the pods nobody asked about for [`LINGER`]; those never released are counted
    /// `deadline`. Returns them.
    pub fn expire(&self) -> Vec<WaitKey> {
        let now = Instant::now();
        let mut inner = self.inner();
        let mut ended = Vec::new();
        inner.waits.retain(|key, wait| {
            let keep = wait.open > 0 || now.duration_since(wait.last_asked) < LINGER;
            if !keep && !wait.verdict.borrow().is_release() {
                ended.push(key.clone());
            }
            keep
        });
        drop(inner);
        for _ in &ended {
            self.metrics
                .drain_waits
                .get_or_create(&WaitOutcomeLabels::DEADLINE)
                .inc();
        }
        ended
    }
}

/// An open ask; closed on drop.
struct Open<'a> {
    board: &'a Board,
    key: WaitKey,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.board.close(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> WaitKey {
        WaitKey {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn board(max: usize) -> Arc<Board> {
        Arc::new(Board::new(max, Arc::new(Metrics::default())))
    }

    fn count(board: &Board, outcome: WaitOutcomeLabels) -> u64 {
        board.metrics.drain_waits.get_or_create(&outcome).get()
    }

    /// Spawn an ask; it parks until answered.
    fn ask(board: &Arc<Board>, name: &str, secs: u64) -> tokio::task::JoinHandle<Answer> {
        let (board, key) = (board.clone(), key(name));
        tokio::spawn(async move { board.ask(key, Duration::from_secs(secs)).await })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_board_answers_not_leader_at_once() {
        let board = board(10);
        assert_eq!(ask(&board, "a", 25).await.unwrap(), Answer::NotLeader);
        assert!(board.asked().is_empty(), "a standby remembers nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_ask_parks_until_its_timeout_and_hears_the_latest_not_yet() {
        let board = board(10);
        board.lead();
        let parked = ask(&board, "a", 10);
        settle().await;
        assert_eq!(board.open(), 1);
        assert_eq!(board.metrics.drain_waits_open.get(), 1);
        assert_eq!(board.asked(), vec![key("a")]);
        assert!(!board.publish(&key("a"), Verdict::NotYet("targets-draining")));
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert!(!parked.is_finished(), "a not yet does not end the poll");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            parked.await.unwrap(),
            Answer::Verdict(Verdict::NotYet("targets-draining"))
        );
        assert_eq!(board.open(), 0);
        assert_eq!(board.metrics.drain_waits_open.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_is_held_at_most_max_poll() {
        let board = board(10);
        board.lead();
        let started = Instant::now();
        let answer = board.ask(key("a"), Duration::from_secs(3_600)).await;
        assert_eq!(answer, Answer::Verdict(UNDECIDED));
        assert_eq!(started.elapsed(), MAX_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_every_ask_of_the_pod_at_once_and_stays() {
        let board = board(10);
        board.lead();
        let (a1, a2, other) = (
            ask(&board, "a", 25),
            ask(&board, "a", 25),
            ask(&board, "b", 25),
        );
        settle().await;
        assert_eq!(board.open(), 3);
        assert!(board.publish(&key("a"), Verdict::Release("targets-gone")));
        settle().await;
        for parked in [a1, a2] {
            assert!(parked.is_finished(), "released at once");
            assert_eq!(
                parked.await.unwrap(),
                Answer::Verdict(Verdict::Release("targets-gone"))
            );
        }
        assert!(!other.is_finished(), "another pod's ask stays parked");
        assert_eq!(count(&board, WaitOutcomeLabels::RELEASED), 1);
        // Another container's waiter asks later: answered at once, not counted again.
        let late = ask(&board, "a", 25);
        settle().await;
        assert!(late.is_finished());
        assert!(late.await.unwrap() == Answer::Verdict(Verdict::Release("targets-gone")));
        assert!(!board.publish(&key("a"), Verdict::Release("targets-gone")));
        assert!(!board.publish(&key("a"), Verdict::NotYet("describe-failing")));
        assert_eq!(count(&board, WaitOutcomeLabels::RELEASED), 1);
        assert_eq!(
            board.asked(),
            vec![key("b")],
            "released pods need no describe"
        );
        other.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn stepping_down_answers_every_parked_ask_not_leader_at_once() {
        let board = board(10);
        board.lead();
        let parked: Vec<_> = (0..5).map(|i| ask(&board, &format!("p{i}"), 25)).collect();
        settle().await;
        board.step_down();
        settle().await;
        for p in parked {
            assert!(p.is_finished());
            assert_eq!(p.await.unwrap(), Answer::NotLeader);
        }
        assert_eq!(board.open(), 0);
        assert!(board.asked().is_empty());
        assert!(
            !board.publish(&key("p0"), Verdict::Release("targets-gone")),
            "a stepped-down board publishes nothing"
        );
        assert_eq!(ask(&board, "p0", 25).await.unwrap(), Answer::NotLeader);
        // Leading again: a fresh board.
        board.lead();
        let again = ask(&board, "p0", 1);
        assert_eq!(again.await.unwrap(), Answer::Verdict(UNDECIDED));
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_cap_asks_are_busy_and_closed_asks_free_their_place() {
        let board = board(2);
        board.lead();
        let (a, b) = (ask(&board, "a", 25), ask(&board, "b", 25));
        settle().await;
        assert_eq!(ask(&board, "c", 25).await.unwrap(), Answer::Busy);
        assert!(
            !board.asked().contains(&key("c")),
            "a busy ask is not remembered"
        );
        // A client that goes away closes its ask.
        a.abort();
        settle().await;
        assert_eq!(board.open(), 1);
        let c = ask(&board, "c", 1);
        assert_eq!(c.await.unwrap(), Answer::Verdict(UNDECIDED));
        b.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn pods_that_stop_asking_without_a_release_count_as_deadline() {
        let board = board(10);
        board.lead();
        assert_eq!(
            board.ask(key("a"), Duration::from_secs(1)).await,
            Answer::Verdict(UNDECIDED)
        );
        let _ = board.ask(key("b"), Duration::from_secs(1)).await;
        board.publish(&key("b"), Verdict::Release("targets-gone"));
        // a was last asked at 1 s, b at 2 s.
        tokio::time::sleep(LINGER - Duration::from_secs(3)).await;
        assert!(board.expire().is_empty(), "still within the linger");
        assert_eq!(board.asked(), vec![key("a")]);
        // Asks that keep coming keep the pod.
        let _ = board.ask(key("a"), Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(board.expire().is_empty());
        tokio::time::sleep(LINGER).await;
        assert_eq!(board.expire(), vec![key("a")]);
        assert_eq!(count(&board, WaitOutcomeLabels::DEADLINE), 1);
        assert_eq!(count(&board, WaitOutcomeLabels::RELEASED), 1);
        assert!(board.asked().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_pod_wakes_the_watcher() {
        let board = board(10);
        board.lead();
        let parked = ask(&board, "a", 25);
        // The permit is kept although nobody waited yet.
        tokio::time::timeout(Duration::from_secs(1), board.arrived())
            .await
            .expect("woken");
        parked.abort();
    }
}
