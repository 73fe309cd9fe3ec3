//! Who runs beside whom. Every topic's tests share this one process, and libtest runs them
//! side by side (`--test-threads=2` in CI), where before each file was a process of its own.
//!
//! - A test that reads state the whole process shares (the Prometheus recorder, the counting
//!   allocator, the peak RSS) runs alone in a child process of this binary:
//!   [`in_own_process`].
//! - A test that measures the machine (time limits, a server's RSS and latency under
//!   attack) takes [`exclusive`]: it waits until no [`heavy`] turn is held, and no heavy
//!   turn starts while it runs. Every test that loads the machine holds a heavy turn:
//!   [`super::spawn_server`] and [`super::Binary`] take one themselves, other heavy work
//!   (inference in-process, Chromium, decoding) takes it by hand. Heavy turns run beside
//!   each other, and beside tests that take no turn (manifests, parsing).

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Held {
    heavy: usize,
    exclusive: bool,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    heavy: 0,
    exclusive: false,
});
static CHANGED: Condvar = Condvar::new();

thread_local! {
    /// Whether this thread's test holds the exclusive turn (its own servers need no other).
    static EXCLUSIVE_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Longer than any test takes; a wait this long is a test that took a turn it cannot get.
const STUCK: Duration = Duration::from_secs(900);

fn held() -> MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on [`CHANGED`] while `blocked` holds; panics after [`STUCK`].
fn wait_while(
    mut h: MutexGuard<'static, Held>,
    what: &str,
    blocked: impl Fn(&Held) -> bool,
) -> MutexGuard<'static, Held> {
    let since = Instant::now();
    while blocked(&h) {
        let left = STUCK.saturating_sub(since.elapsed());
        assert!(!left.is_zero(), "waited {STUCK:?} for a {what} turn");
        h = CHANGED
            .wait_timeout(h, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    h
}

/// A turn; given back when dropped.
pub struct Turn(Kind);

enum Kind {
    /// Taken inside an exclusive turn of the same test: nothing to give back.
    None,
    Heavy,
    Exclusive,
}

/// A turn for work that loads the machine: waits while a measuring test runs.
pub fn heavy() -> Turn {
    if EXCLUSIVE_HERE.with(Cell::get) {
        return Turn(Kind::None);
    }
    let mut h = wait_while(held(), "heavy", |h| h.exclusive);
    h.heavy += 1;
    Turn(Kind::Heavy)
}

/// The machine to this test alone (as far as other tests go): waits until no heavy turn is
/// held, and keeps new ones waiting until dropped. Take it on the test's own thread, first.
pub fn exclusive() -> Turn {
    let mut h = wait_while(held(), "exclusive", |h| h.exclusive || h.heavy > 0);
    h.exclusive = true;
    EXCLUSIVE_HERE.with(|e| e.set(true));
    Turn(Kind::Exclusive)
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut h = held();
        match self.0 {
            Kind::None => return,
            Kind::Heavy => h.heavy -= 1,
            Kind::Exclusive => {
                h.exclusive = false;
                EXCLUSIVE_HERE.with(|e| e.set(false));
            }
        }
        drop(h);
        CHANGED.notify_all();
    }
}

/// Set in the child that [`in_own_process`] starts, to the test it runs.
const CHILD: &str = "SEGSERVE_TESTS_OWN_PROCESS";

/// Runs the calling test alone in a child process of this test binary, for tests that read
/// what the whole process shares. In the parent it runs the child, passes its output on,
/// fails if the test failed there, and returns true: the caller returns. In the child it
/// returns false: the caller runs the test. `module` is `module_path!()`, `test` the
/// function's name.
pub fn in_own_process(module: &str, test: &str) -> bool {
    // Test names are paths within the crate: drop the crate's name.
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let name = if module.is_empty() {
        test.to_string()
    } else {
        format!("{module}::{test}")
    };
    if std::env::var(CHILD).is_ok_and(|n| n == name) {
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            name.as_str(),
            "--exact",
            "--test-threads=1",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD, &name)
        .output()
        .expect("this test binary runs again");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Shown by libtest when the test fails, or with --nocapture.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{name} failed in its own process");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run in its own process"
    );
    true
}
