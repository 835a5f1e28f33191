//! The guest's console: where its output goes and where its input comes from.
//!
//! Every output device of a guest (UART, debug console, hypercalls) writes into one
//! [`GuestOutput`], so the guest's bytes come out in the order it wrote them. Output is
//! line-buffered: one `write(2)` per line instead of one per byte; a partial line is flushed when
//! the guest waits for input, when it ends, and by [`GuestOutput::flush`].
//!
//! Input bytes (stdin) are shared by the UART's receive register and the GETCHAR/READ hypercalls
//! through one [`GuestInput`]. A reader thread is started the first time the guest asks for input,
//! so a guest that never reads leaves stdin alone.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks a mutex even if another thread panicked while holding it: console state stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One guest's output stream. Cloning gives another handle to the same stream.
#[derive(Clone)]
pub struct GuestOutput {
    shared: Arc<Mutex<OutputState>>,
}

struct OutputState {
    /// Bytes of the current, unfinished line.
    pending: Vec<u8>,
    sink: Box<dyn Write + Send>,
}

impl GuestOutput {
    /// Output to the process's standard output.
    pub fn stdout() -> GuestOutput {
        GuestOutput::to_writer(Box::new(io::stdout()))
    }

    pub fn to_writer(sink: Box<dyn Write + Send>) -> GuestOutput {
        GuestOutput {
            shared: Arc::new(Mutex::new(OutputState {
                pending: Vec::with_capacity(256),
                sink,
            })),
        }
    }

    /// Appends guest bytes; every complete line goes out at once.
    pub fn write_bytes(&self, bytes: &[u8]) {
        let mut state = lock(&self.shared);
        match bytes.iter().rposition(|&b| b == b'\n') {
            None => state.pending.extend_from_slice(bytes),
            Some(last_newline) => {
                let (lines, rest) = bytes.split_at(last_newline + 1);
                state.pending.extend_from_slice(lines);
                state.write_out();
                state.pending.extend_from_slice(rest);
            }
        }
    }

    /// Writes out a partial line (before the guest waits for input, and when it ends).
    pub fn flush(&self) {
        lock(&self.shared).write_out();
    }
}

impl OutputState {
    fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // The guest cannot be told that its console is gone (a closed pipe, a full disk): its
        // output is dropped and the guest runs on, as with a disconnected serial line.
        let _ = self.sink.write_all(&self.pending);
        let _ = self.sink.flush();
        self.pending.clear();
    }
}

/// `io::Write` for the UART model (vm-superio writes each transmitted byte to it).
impl Write for GuestOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing per byte would undo the line buffering: lines go out on `\n`.
        Ok(())
    }
}

/// The answer to a blocking read of guest input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputWait {
    /// This many bytes were copied (at least 1).
    Read(usize),
    /// The input ended (stdin closed) and nothing is left.
    EndOfInput,
    /// The guest is being stopped (--timeout): stop waiting.
    Cancelled,
}

/// One guest's input. Cloning gives another handle to the same input.
#[derive(Clone)]
pub struct GuestInput {
    shared: Arc<InputShared>,
}

struct InputShared {
    state: Mutex<InputState>,
    /// Signalled when bytes arrive, the input ends, or the wait is cancelled.
    changed: Condvar,
}

struct InputState {
    buffered: VecDeque<u8>,
    ended: bool,
    cancelled: bool,
    /// The source, until the reader thread takes it on the first read.
    source: Option<Box<dyn Read + Send>>,
}

impl GuestInput {
    /// Input from the process's standard input.
    pub fn stdin() -> GuestInput {
        GuestInput::from_reader(Box::new(io::stdin()))
    }

    /// A guest that gets no input: reads see end of input at once.
    pub fn none() -> GuestInput {
        GuestInput::from_reader(Box::new(io::empty()))
    }

    pub fn from_reader(source: Box<dyn Read + Send>) -> GuestInput {
        GuestInput {
            shared: Arc::new(InputShared {
                state: Mutex::new(InputState {
                    buffered: VecDeque::new(),
                    ended: false,
                    cancelled: false,
                    source: Some(source),
                }),
                changed: Condvar::new(),
            }),
        }
    }

    /// Copies up to `buf.len()` available bytes without waiting; 0 when none are there (yet).
    pub fn try_read(&self, buf: &mut [u8]) -> usize {
        let mut state = lock(&self.shared.state);
        self.start_reader(&mut state);
        take_buffered(&mut state, buf)
    }

    /// Waits until at least one byte is available (or the input ends, or the wait is cancelled),
    /// then copies up to `buf.len()` bytes.
    pub fn read_blocking(&self, buf: &mut [u8]) -> InputWait {
        let mut state = lock(&self.shared.state);
        self.start_reader(&mut state);
        loop {
            if state.cancelled {
                return InputWait::Cancelled;
            }
            let copied = take_buffered(&mut state, buf);
            if copied > 0 {
                return InputWait::Read(copied);
            }
            if state.ended {
                return InputWait::EndOfInput;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Wakes every blocked reader with [`InputWait::Cancelled`], now and from now on.
    pub fn cancel(&self) {
        lock(&self.shared.state).cancelled = true;
        self.shared.changed.notify_all();
    }

    /// Starts the thread that moves bytes from the source into the buffer, once.
    fn start_reader(&self, state: &mut InputState) {
        let Some(mut source) = state.source.take() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        // The thread is detached: a read from a terminal or pipe cannot be interrupted portably,
        // and the thread ends when the input ends or with the process.
        let spawned = std::thread::Builder::new()
            .name("guest-input".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match source.read(&mut chunk) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    };
                    let mut state = lock(&shared.state);
                    if n == 0 {
                        state.ended = true;
                    } else {
                        state.buffered.extend(&chunk[..n]);
                    }
                    shared.changed.notify_all();
                    if n == 0 {
                        return;
                    }
                }
            });
        if spawned.is_err() {
            // No thread, no input: the guest sees end of input rather than waiting forever.
            state.ended = true;
        }
    }
}

fn take_buffered(state: &mut InputState, buf: &mut [u8]) -> usize {
    let n = buf.len().min(state.buffered.len());
    for (slot, byte) in buf.iter_mut().zip(state.buffered.drain(..n)) {
        *slot = byte;
    }
    n
}
