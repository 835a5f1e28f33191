//! mini-kvm's own messages on stderr (errors, reports, `--verbose` traces, `--stats`), written so
//! that a stderr nobody reads cannot take the run's time bound away.
//!
//! A pipe that nobody reads fills up, and a plain `write(2)` to it waits for ever: a vCPU tracing
//! its exits (`--verbose`) would hang in the middle of a trace, and `--timeout` would never end
//! the run. So each write waits for room in slices of [`WAIT`], like the guests' own output
//! (src/console/mod.rs). While the guest runs, a full stderr holds mini-kvm up (back-pressure:
//! nothing is lost). Once the run is being stopped (`--timeout`, Ctrl-C, quit: the VM's event
//! loop calls [`stop_waiting`]), a message stderr cannot take within one slice is dropped, and
//! later ones are written only if there is room at once. The exit status still says how the run
//! ended. Each message goes out in one piece (one lock for all threads), so lines never mix.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How long one wait for room lasts, in milliseconds.
const WAIT: libc::c_int = 100;
/// A pipe that polls writable takes this many bytes without blocking (PIPE_BUF).
const CHUNK: usize = 4096;

/// The run is being stopped: a full stderr is no longer waited for.
static STOP_WAITING: AtomicBool = AtomicBool::new(false);
/// A message was dropped: the next ones do not wait at all.
static STUCK: AtomicBool = AtomicBool::new(false);
/// Bytes dropped so far.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// One message at a time, from any thread.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The run is being stopped: from now on a message that stderr cannot take is dropped.
pub fn stop_waiting() {
    STOP_WAITING.store(true, Ordering::Release);
}

/// How many bytes of messages were dropped because stderr could not take them.
pub fn dropped_bytes() -> u64 {
    DROPPED.load(Ordering::Acquire)
}

/// stderr, bounded in time as the module says. Use it with `writeln!`: each `writeln!` is one
/// message.
pub fn stderr() -> Stderr {
    Stderr
}

pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let patience = if STUCK.load(Ordering::Acquire) {
                0
            } else {
                WAIT
            };
            let mut fd = libc::pollfd {
                fd: libc::STDERR_FILENO,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd. A signal (the vCPU kick) ends the wait with EINTR.
            let ready = unsafe { libc::poll(&mut fd, 1, patience) };
            let interrupted =
                ready < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            if ready < 0 && !interrupted {
                return Err(io::Error::last_os_error());
            }
            // (While the run stops, the vCPU kick interrupts every wait: that counts as a wait
            // that found no room.)
            if ready == 0 || interrupted {
                if STOP_WAITING.load(Ordering::Acquire) {
                    STUCK.store(true, Ordering::Release);
                    DROPPED.fetch_add(buf.len() as u64, Ordering::AcqRel);
                    // Taken: the caller has nothing more to do with it.
                    return Ok(buf.len());
                }
                continue;
            }
            let chunk = &buf[..buf.len().min(CHUNK)];
            // SAFETY: writes from a valid slice. (A closed stderr is EPIPE: Rust ignores SIGPIPE.)
            let written =
                unsafe { libc::write(libc::STDERR_FILENO, chunk.as_ptr().cast(), chunk.len()) };
            if written < 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(written as usize);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// One message: formatted first, then written whole under the lock.
    fn write_fmt(&mut self, arguments: fmt::Arguments<'_>) -> io::Result<()> {
        let text = fmt::format(arguments);
        let _one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.write_all(text.as_bytes())
    }
}
