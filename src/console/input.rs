//! One guest's input: a small buffer between a source (stdin, a file, the `--tui` view) and the
//! guest's devices.
//!
//! Back-pressure, not buffering: the buffer holds at most [`INPUT_BUFFER`] bytes. The VM's event
//! loop (src/vmm/event_loop.rs) reads the source only while the buffer has room, and only once
//! the guest has asked for input at all, so a guest that never reads leaves stdin alone. The
//! devices take bytes out: the GETCHAR/READ hypercalls wait for them on the vCPU's thread; the
//! UART and the keyboard, which deliver input by interrupt, are [`InputListener`]s that the
//! event loop tells when bytes arrive.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::lock;

/// The most input bytes waiting for a guest. A guest that reads slower than its input arrives
/// holds up the source (a pipe's writer waits), instead of growing a buffer.
pub const INPUT_BUFFER: usize = 4096;

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

/// A device that takes input on its own, without the guest asking: told when bytes arrive or
/// the input ends. Called on the event loop's thread, never with the input's lock held.
pub trait InputListener: Send + Sync {
    fn input_ready(&self, input: &GuestInput);
}

/// What the event loop should do about the source now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// Nothing: no source, the input has ended, the guest has not asked for input yet, or the
    /// buffer is full.
    Idle,
    /// Wait until this descriptor is readable, then call [`GuestInput::fill`].
    Poll(RawFd),
    /// The source never blocks (a file, bytes in memory): call [`GuestInput::fill`] now.
    Ready,
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
    /// Written when the event loop should look at the source again: the guest asked for input
    /// for the first time, or took bytes out of a full buffer.
    wake: Option<EventFd>,
    /// Read by the event loop only.
    source: Mutex<Option<InputSource>>,
    listeners: Mutex<Vec<Arc<dyn InputListener>>>,
    /// Run once when a keyboard takes this input (the terminal goes into raw mode then).
    keyboard_hook: Mutex<Option<fn()>>,
}

struct InputState {
    buffered: VecDeque<u8>,
    ended: bool,
    cancelled: bool,
    /// The guest has asked for input: from now on the event loop reads the source.
    wanted: bool,
    /// The source cannot be polled (epoll refuses regular files and /dev/null) or is memory:
    /// reading it never blocks.
    always_ready: bool,
}

struct InputSource {
    reader: Box<dyn Read + Send>,
    poll_fd: Option<RawFd>,
}

/// Standard input through read(2) itself. std's `Stdin` keeps a buffer of its own, and bytes
/// waiting there would be invisible to epoll.
pub struct RawStdin;

impl Read for RawStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsRawFd for RawStdin {
    fn as_raw_fd(&self) -> RawFd {
        libc::STDIN_FILENO
    }
}

impl GuestInput {
    /// Input from the process's standard input.
    pub fn stdin() -> GuestInput {
        GuestInput::from_fd(RawStdin)
    }

    /// A guest that gets no input: reads see end of input at once.
    pub fn none() -> GuestInput {
        GuestInput::new(None, true)
    }

    /// Input from a descriptor the event loop can poll (a pipe, a terminal; a regular file is
    /// read as it is, since it is always ready).
    pub fn from_fd(source: impl Read + AsRawFd + Send + 'static) -> GuestInput {
        let poll_fd = Some(source.as_raw_fd());
        let source = InputSource {
            reader: Box::new(source),
            poll_fd,
        };
        GuestInput::new(Some(source), false)
    }

    /// Input from bytes in memory (or any reader that never blocks).
    pub fn from_memory(source: impl Read + Send + 'static) -> GuestInput {
        let source = InputSource {
            reader: Box::new(source),
            poll_fd: None,
        };
        GuestInput::new(Some(source), false)
    }

    /// Input that the VMM feeds itself (the `--tui` view sends the focused guest its keys).
    pub fn fed() -> (GuestInput, InputFeeder) {
        let input = GuestInput::new(None, false);
        let feeder = InputFeeder {
            input: input.clone(),
        };
        (input, feeder)
    }

    fn new(source: Option<InputSource>, ended: bool) -> GuestInput {
        let always_ready = source.as_ref().is_some_and(|s| s.poll_fd.is_none());
        // Without the eventfd the event loop is never woken for this input: give the guest
        // end of input rather than a wait that never ends. An input that has ended needs none.
        let wake = if ended {
            None
        } else {
            EventFd::new(EFD_NONBLOCK).ok()
        };
        let ended = ended || (source.is_some() && wake.is_none());
        GuestInput {
            shared: Arc::new(InputShared {
                state: Mutex::new(InputState {
                    buffered: VecDeque::new(),
                    ended,
                    cancelled: false,
                    wanted: false,
                    always_ready,
                }),
                changed: Condvar::new(),
                wake,
                source: Mutex::new(source),
                listeners: Mutex::new(Vec::new()),
                keyboard_hook: Mutex::new(None),
            }),
        }
    }

    // ---- the guest's side (vCPU threads) -------------------------------------------------

    /// Copies up to `buf.len()` available bytes without waiting; 0 when none are there (yet).
    pub fn try_read(&self, buf: &mut [u8]) -> usize {
        let mut state = lock(&self.shared.state);
        let copied = self.take(&mut state, buf);
        drop(state);
        copied
    }

    /// Waits until at least one byte is available (or the input ends, or the wait is cancelled),
    /// then copies up to `buf.len()` bytes.
    pub fn read_blocking(&self, buf: &mut [u8]) -> InputWait {
        let mut state = lock(&self.shared.state);
        loop {
            if state.cancelled {
                return InputWait::Cancelled;
            }
            let copied = self.take(&mut state, buf);
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

    /// The input has ended and every byte has been taken.
    pub fn is_finished(&self) -> bool {
        let state = lock(&self.shared.state);
        state.ended && state.buffered.is_empty()
    }

    /// Takes bytes, and wakes the event loop when the guest first asks for input or makes room
    /// in a full buffer.
    fn take(&self, state: &mut InputState, buf: &mut [u8]) -> usize {
        let first_ask = !std::mem::replace(&mut state.wanted, true);
        let was_full = state.buffered.len() >= INPUT_BUFFER;
        let n = buf.len().min(state.buffered.len());
        for (slot, byte) in buf.iter_mut().zip(state.buffered.drain(..n)) {
            *slot = byte;
        }
        if (first_ask || (was_full && n > 0))
            && !state.ended
            && let Some(wake) = &self.shared.wake
        {
            let _ = wake.write(1);
        }
        n
    }

    /// Runs `hook` when a keyboard device first takes this input (src/terminal.rs puts the
    /// terminal in raw mode then, so that every key reaches the guest at once).
    pub fn on_keyboard_claimed(&self, hook: fn()) {
        *lock(&self.shared.keyboard_hook) = Some(hook);
    }

    /// A keyboard device takes this input: runs the hook, once.
    pub fn keyboard_claimed(&self) {
        if let Some(hook) = lock(&self.shared.keyboard_hook).take() {
            hook();
        }
    }

    /// `listener` is told from now on when bytes arrive or the input ends, and once now.
    pub fn add_listener(&self, listener: Arc<dyn InputListener>) {
        lock(&self.shared.listeners).push(Arc::clone(&listener));
        listener.input_ready(self);
    }

    /// Wakes every blocked reader with [`InputWait::Cancelled`], now and from now on. The
    /// guest is going away: its devices stop listening.
    pub fn cancel(&self) {
        lock(&self.shared.state).cancelled = true;
        self.shared.changed.notify_all();
        lock(&self.shared.listeners).clear();
    }

    /// The bytes that have arrived and that no device has taken yet (for a snapshot: typed
    /// ahead of the guest, they belong to it).
    pub fn waiting(&self) -> Vec<u8> {
        lock(&self.shared.state).buffered.iter().copied().collect()
    }

    /// Puts bytes a snapshot saved (see [`waiting`](Self::waiting)) before anything the source
    /// gives, at most [`INPUT_BUFFER`] of them; returns false, putting nothing, if there are
    /// more.
    pub fn put_back(&self, bytes: &[u8]) -> bool {
        {
            let mut state = lock(&self.shared.state);
            if state.buffered.len() + bytes.len() > INPUT_BUFFER {
                return false;
            }
            for &byte in bytes.iter().rev() {
                state.buffered.push_front(byte);
            }
        }
        self.arrived();
        true
    }

    // ---- the event loop's side -----------------------------------------------------------

    /// The eventfd that says "look at the source again" (see [`GuestInput::source_state`]).
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.shared.wake.as_ref().map(|wake| wake.as_raw_fd())
    }

    /// Resets the wake eventfd after the event loop saw it.
    pub fn clear_wake(&self) {
        if let Some(wake) = &self.shared.wake {
            let _ = wake.read();
        }
    }

    pub fn source_state(&self) -> SourceState {
        let state = lock(&self.shared.state);
        let idle =
            state.ended || state.cancelled || !state.wanted || state.buffered.len() >= INPUT_BUFFER;
        if idle {
            return SourceState::Idle;
        }
        if state.always_ready {
            return SourceState::Ready;
        }
        match lock(&self.shared.source).as_ref().and_then(|s| s.poll_fd) {
            Some(fd) => SourceState::Poll(fd),
            None => SourceState::Idle,
        }
    }

    /// The source's descriptor cannot be polled (epoll refuses regular files): it is read
    /// whenever there is room instead, which never blocks for such a file.
    pub fn source_is_always_ready(&self) {
        lock(&self.shared.state).always_ready = true;
    }

    /// Reads the source once, as much as fits in the buffer, and tells the waiting readers and
    /// the listeners.
    pub fn fill(&self) {
        let room = {
            let state = lock(&self.shared.state);
            if state.ended || state.cancelled {
                return;
            }
            INPUT_BUFFER.saturating_sub(state.buffered.len())
        };
        if room == 0 {
            return;
        }
        let mut chunk = [0u8; 1024];
        let want = room.min(chunk.len());
        let read = {
            let mut source = lock(&self.shared.source);
            let Some(source) = source.as_mut() else {
                return;
            };
            source.reader.read(&mut chunk[..want])
        };
        match read {
            // Nothing after all (a terminal's Ctrl-A keys are taken out): wait for more.
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                return;
            }
            Ok(n) if n > 0 => lock(&self.shared.state).buffered.extend(&chunk[..n]),
            // End of input, or an error that ends it.
            Ok(_) | Err(_) => {
                lock(&self.shared.state).ended = true;
                *lock(&self.shared.source) = None;
            }
        }
        self.arrived();
    }

    /// Wakes the blocked readers and tells the listeners that bytes arrived or the input ended.
    fn arrived(&self) {
        self.shared.changed.notify_all();
        let listeners = lock(&self.shared.listeners).clone();
        for listener in listeners {
            listener.input_ready(self);
        }
    }
}

/// The sending end of a [`GuestInput::fed`] input.
#[derive(Clone)]
pub struct InputFeeder {
    input: GuestInput,
}

impl InputFeeder {
    /// Adds `bytes` to the input. Keys typed into the `--tui` view arrive at a person's pace;
    /// what does not fit in the buffer (a paste the guest has not read) is dropped.
    pub fn send(&self, bytes: &[u8]) {
        {
            let mut state = lock(&self.input.shared.state);
            let room = INPUT_BUFFER.saturating_sub(state.buffered.len());
            state.buffered.extend(&bytes[..bytes.len().min(room)]);
        }
        self.input.arrived();
    }

    /// Ends the input: readers see end of input once the buffer is empty.
    pub fn close(&self) {
        lock(&self.input.shared.state).ended = true;
        self.input.arrived();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_read_only_after_the_guest_asks_and_only_while_there_is_room() {
        let input = GuestInput::from_memory(io::repeat(b'x'));
        assert_eq!(input.source_state(), SourceState::Idle, "nobody asked yet");
        assert_eq!(input.try_read(&mut [0u8; 1]), 0);
        assert_eq!(input.source_state(), SourceState::Ready);
        while input.source_state() == SourceState::Ready {
            input.fill();
        }
        // An endless source fills the buffer and no more.
        assert_eq!(lock(&input.shared.state).buffered.len(), INPUT_BUFFER);
        let mut byte = [0u8; 1];
        assert_eq!(input.read_blocking(&mut byte), InputWait::Read(1));
        assert_eq!(
            input.source_state(),
            SourceState::Ready,
            "room for one more"
        );
    }

    #[test]
    fn end_of_input_reaches_readers_after_the_bytes() {
        let input = GuestInput::from_memory(io::Cursor::new(b"ab".to_vec()));
        let mut buf = [0u8; 4];
        assert_eq!(input.try_read(&mut buf), 0);
        input.fill();
        input.fill();
        assert_eq!(input.source_state(), SourceState::Idle);
        assert_eq!(input.read_blocking(&mut buf), InputWait::Read(2));
        assert_eq!(&buf[..2], b"ab");
        assert!(input.is_finished());
        assert_eq!(input.read_blocking(&mut buf), InputWait::EndOfInput);
    }

    #[test]
    fn a_feeder_drops_what_does_not_fit() {
        let (input, feeder) = GuestInput::fed();
        feeder.send(&vec![b'k'; INPUT_BUFFER + 10]);
        assert_eq!(lock(&input.shared.state).buffered.len(), INPUT_BUFFER);
        feeder.close();
        let mut buf = vec![0u8; INPUT_BUFFER + 10];
        assert_eq!(input.read_blocking(&mut buf), InputWait::Read(INPUT_BUFFER));
        assert_eq!(input.read_blocking(&mut buf), InputWait::EndOfInput);
    }
}
