//! The guest's console: where its output goes and where its input comes from.
//!
//! Every output device of a guest (UART, debug console, hypercalls) writes into one
//! [`GuestOutput`], so the guest's bytes come out in the order it wrote them. Output is
//! line-buffered: one `write(2)` per line instead of one per byte; a partial line is flushed when
//! the guest waits for input, when it ends, and by [`GuestOutput::flush`].
//!
//! Input bytes (stdin) are shared by the UART's receive register, the keyboard and the
//! GETCHAR/READ hypercalls through one [`GuestInput`] (`input.rs`): a small buffer that the VM's
//! event loop fills only as fast as the guest empties it.

mod input;
pub mod stderr;

pub use input::{
    GuestInput, INPUT_BUFFER, InputFeeder, InputListener, InputWait, RawStdin, SourceState,
};

use std::io::{self, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

/// Locks a mutex even if another thread panicked while holding it: console state stays usable.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the output of one or more guests goes. Shared by the guests of a run, so that each
/// guest's write is one `write_all` on it and lines of different guests never mix.
pub type SharedSink = Arc<Mutex<dyn Write + Send>>;

/// The process's standard output, as a [`SharedSink`].
pub fn stdout_sink() -> SharedSink {
    Arc::new(Mutex::new(StdoutWriter))
}

/// File descriptor 1, written without `std`'s buffer (guest output is line-buffered already)
/// and without blocking for long: a write waits at most [`StdoutWriter::WAIT`] for room and
/// then fails with `WouldBlock`, so that a writer whose guest is being stopped can give up on a
/// pipe nobody reads instead of hanging there.
struct StdoutWriter;

impl StdoutWriter {
    const WAIT: libc::c_int = 100; // ms
    /// A pipe that polls writable takes this many bytes without blocking (PIPE_BUF).
    const CHUNK: usize = 4096;

    /// The part of `buf` to write next: at most [`Self::CHUNK`] bytes, cut after a newline
    /// where it can be, so that a write given up on (its guest being stopped) never leaves half
    /// a line for another guest's line to follow.
    fn next_chunk(buf: &[u8]) -> &[u8] {
        if buf.len() <= Self::CHUNK {
            return buf;
        }
        let chunk = &buf[..Self::CHUNK];
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => &chunk[..=last_newline],
            None => chunk,
        }
    }
}

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut stdout = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd. A signal (the vCPU kick) ends the wait with EINTR.
        let ready = unsafe { libc::poll(&mut stdout, 1, Self::WAIT) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        if ready == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        // A closed pipe or an error shows in the write's result (EPIPE: Rust ignores SIGPIPE).
        let chunk = Self::next_chunk(buf);
        // SAFETY: writes from a valid slice.
        let written =
            unsafe { libc::write(libc::STDOUT_FILENO, chunk.as_ptr().cast(), chunk.len()) };
        if written < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(written as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The label put before each line of a guest when several guests share a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineLabel {
    /// `[1:hello] `.
    pub text: String,
    /// An ANSI SGR colour code (e.g. "36" for cyan) when colour is on.
    pub colour: Option<&'static str>,
}

/// Colours for guest labels, in guest order (ANSI: cyan, yellow, magenta, green, blue, red and
/// their bright variants).
const LABEL_COLOURS: [&str; 12] = [
    "36", "33", "35", "32", "34", "31", "96", "93", "95", "92", "94", "91",
];

impl LineLabel {
    /// The label of guest number `index` (0-based) called `name`.
    pub fn for_guest(index: usize, name: &str, colour: bool) -> LineLabel {
        LineLabel {
            text: format!("[{}:{name}] ", index + 1),
            colour: colour.then(|| LABEL_COLOURS[index % LABEL_COLOURS.len()]),
        }
    }

    /// Appends `line` (without its newline) to `out`, labelled, with a newline. The guest's
    /// control characters (but tab) are shown in caret notation (`^[` for ESC, `^M` for CR), so
    /// that no guest can move the cursor back over its label and pass for another guest.
    fn write_line(&self, line: &[u8], out: &mut Vec<u8>) {
        match self.colour {
            Some(code) => {
                out.extend_from_slice(format!("\x1b[{code}m{}\x1b[0m", self.text).as_bytes())
            }
            None => out.extend_from_slice(self.text.as_bytes()),
        }
        for &byte in line {
            match byte {
                b'\t' => out.push(byte),
                0..=0x1f => out.extend_from_slice(&[b'^', byte + 0x40]),
                0x7f => out.extend_from_slice(b"^?"),
                _ => out.push(byte),
            }
        }
        out.push(b'\n');
    }
}

/// One guest's output stream. Cloning gives another handle to the same stream.
#[derive(Clone)]
pub struct GuestOutput {
    shared: Arc<Mutex<OutputState>>,
    /// Set when the guest is being stopped (`--timeout`, a quit): output that cannot be written
    /// now (nobody reads the pipe) is dropped instead of waited for, so the stop cannot hang.
    stopping: Arc<AtomicBool>,
}

struct OutputState {
    /// Bytes of the current, unfinished line (or, unlabelled, not yet written).
    pending: Vec<u8>,
    sink: SharedSink,
    /// With a label, only whole lines are written, each with the label in front.
    label: Option<LineLabel>,
    /// Bytes ready for the sink (lines with their labels) that it has not taken yet.
    unwritten: Vec<u8>,
    /// `--snapshot-on-output`: the text looked for in the guest's bytes.
    watch: Option<TextWatch>,
}

/// Looks for a text in a stream of bytes that arrive in pieces; remembers only the last
/// `text.len() - 1` bytes, so memory stays bounded whatever the guest prints.
struct TextWatch {
    text: Vec<u8>,
    tail: Vec<u8>,
    seen: Arc<AtomicBool>,
}

impl TextWatch {
    fn feed(&mut self, bytes: &[u8]) {
        if self.seen.load(Ordering::Relaxed) || self.text.is_empty() {
            return;
        }
        self.tail.extend_from_slice(bytes);
        if self
            .tail
            .windows(self.text.len())
            .any(|window| window == self.text)
        {
            self.seen.store(true, Ordering::Release);
            self.tail = Vec::new();
            return;
        }
        let keep = self.text.len() - 1;
        let cut = self.tail.len().saturating_sub(keep);
        self.tail.drain(..cut);
    }
}

/// How long a write waits for the sink to take bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Until every byte is written, or the guest is being stopped (the vCPU thread).
    UntilDone,
    /// Only while the sink takes bytes at once (the thread that watches the guest, which must
    /// never block: it is the one that stops the guest).
    WhileReady,
}

impl GuestOutput {
    /// Output to the process's standard output, bytes as the guest wrote them.
    pub fn stdout() -> GuestOutput {
        GuestOutput::to_sink(stdout_sink(), None)
    }

    /// Output to a writer of its own, bytes as the guest wrote them.
    pub fn to_writer(sink: Box<dyn Write + Send>) -> GuestOutput {
        GuestOutput::to_sink(Arc::new(Mutex::new(sink)), None)
    }

    /// Output to a shared sink, each line labelled when `label` is given.
    pub fn to_sink(sink: SharedSink, label: Option<LineLabel>) -> GuestOutput {
        GuestOutput {
            shared: Arc::new(Mutex::new(OutputState {
                pending: Vec::with_capacity(256),
                sink,
                label,
                unwritten: Vec::new(),
                watch: None,
            })),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Appends guest bytes; every complete line goes out at once. A line that grows past
    /// [`MAX_PENDING`] without its newline goes out too: as it is when unlabelled; labelled, as
    /// a line of its own ending in [`CUT_MARKER`], the rest following on a new labelled line.
    pub fn write_bytes(&self, bytes: &[u8]) {
        let mut state = lock(&self.shared);
        if let Some(watch) = &mut state.watch {
            watch.feed(bytes);
        }
        for chunk in bytes.chunks(MAX_PENDING) {
            state.pending.extend_from_slice(chunk);
            if chunk.contains(&b'\n') {
                state.write_out(false, Drain::UntilDone, &self.stopping);
            }
            if state.pending.len() >= MAX_PENDING {
                state.cut_long_line(&self.stopping);
            }
        }
    }

    /// Watches the guest's bytes, from now on, for `text`: the flag returned is set once the
    /// guest has written it all (in one write or in several). One watch per stream.
    pub fn watch_for(&self, text: &[u8]) -> Arc<AtomicBool> {
        let seen = Arc::new(AtomicBool::new(false));
        lock(&self.shared).watch = Some(TextWatch {
            text: text.to_vec(),
            tail: Vec::new(),
            seen: Arc::clone(&seen),
        });
        seen
    }

    /// Writes out what may go out before the line is complete: everything when unlabelled (a
    /// prompt before the guest waits for input), nothing more when labelled (a labelled line is
    /// written whole, or at the guest's end).
    pub fn flush(&self) {
        let mut state = lock(&self.shared);
        if state.label.is_none() {
            state.write_out(true, Drain::UntilDone, &self.stopping);
        }
    }

    /// [`flush`](Self::flush) for a thread that must not block: does nothing while the guest's
    /// vCPU thread is writing, and writes only what the sink takes at once.
    pub fn flush_without_waiting(&self) {
        let mut state = match self.shared.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if state.label.is_none() {
            state.write_out(true, Drain::WhileReady, &self.stopping);
        }
    }

    /// The guest is being stopped: from now on, output the sink cannot take is dropped.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Has [`stop`](Self::stop) been called? A long write gives up between its chunks then.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The guest has ended: writes out everything, a labelled partial line with a newline.
    pub fn finish(&self) {
        lock(&self.shared).write_out(true, Drain::UntilDone, &self.stopping);
    }
}

/// The most bytes of one unfinished line kept for a guest: past this, the line is written out
/// without waiting for its newline (so memory stays bounded whatever a guest prints).
pub const MAX_PENDING: usize = 64 * 1024;
/// Ends a labelled line that was cut because it grew past [`MAX_PENDING`].
pub const CUT_MARKER: &[u8] = b" [line cut: over 64 KiB without a newline]";

impl OutputState {
    /// Writes out the unfinished line, which has grown past [`MAX_PENDING`].
    fn cut_long_line(&mut self, stopping: &AtomicBool) {
        if self.label.is_some() {
            self.pending.extend_from_slice(CUT_MARKER);
        }
        self.write_out(true, Drain::UntilDone, stopping);
    }

    /// Formats the complete lines (and with `all`, the partial line too) for the sink and writes
    /// them, in one write when the sink takes them all.
    fn write_out(&mut self, all: bool, drain: Drain, stopping: &AtomicBool) {
        let end = if all {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |last_newline| last_newline + 1)
        };
        match &self.label {
            None => self.unwritten.extend_from_slice(&self.pending[..end]),
            Some(label) => {
                for line in self.pending[..end].split_inclusive(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    label.write_line(line, &mut self.unwritten);
                }
            }
        }
        self.pending.drain(..end);
        if self.unwritten.is_empty() {
            return;
        }
        let mut sink = match drain {
            Drain::UntilDone => lock(&self.sink),
            Drain::WhileReady => match self.sink.try_lock() {
                Ok(sink) => sink,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            },
        };
        let mut written = 0;
        while written < self.unwritten.len() {
            match sink.write(&self.unwritten[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    if drain == Drain::WhileReady {
                        self.unwritten.drain(..written);
                        return;
                    }
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                }
                // The guest cannot be told that its console is gone (a closed pipe, a full
                // disk): its output is dropped and the guest runs on, as with a disconnected
                // serial line.
                Err(_) => break,
            }
        }
        let _ = sink.flush();
        self.unwritten.clear();
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

/// A guest's console: its output stream and its input.
pub struct GuestIo {
    pub output: GuestOutput,
    pub input: GuestInput,
}

#[cfg(test)]
mod tests {
    use super::StdoutWriter;

    #[test]
    fn a_watched_text_is_seen_across_writes_and_only_whole() {
        let output = super::GuestOutput::to_writer(Box::new(std::io::sink()));
        let seen = output.watch_for(b"> ");
        output.write_bytes(b"menu\n>");
        assert!(!seen.load(std::sync::atomic::Ordering::Acquire));
        output.write_bytes(b" ");
        assert!(seen.load(std::sync::atomic::Ordering::Acquire));
        // Byte by byte, with a near miss first: seen only once the whole text has come.
        let output = super::GuestOutput::to_writer(Box::new(std::io::sink()));
        let seen = output.watch_for(b"Result: 100");
        for byte in b"Result: 10\nResult: 10" {
            output.write_bytes(&[*byte]);
        }
        assert!(!seen.load(std::sync::atomic::Ordering::Acquire));
        output.write_bytes(b"0");
        assert!(seen.load(std::sync::atomic::Ordering::Acquire));
    }

    #[test]
    fn stdout_chunks_end_after_a_newline_where_they_can() {
        let short = b"[1:hello] Hello, KVM!\n";
        assert_eq!(StdoutWriter::next_chunk(short), short);
        // 300 lines of 20 bytes: the first chunk ends after line 204 (4080 bytes).
        let lines = b"[1:flood.bin] flood\n".repeat(300);
        assert_eq!(StdoutWriter::next_chunk(&lines), &lines[..4080]);
        // One line longer than a chunk: cut at the chunk.
        let long = [b'x'; 5000];
        assert_eq!(StdoutWriter::next_chunk(&long), &long[..4096]);
    }
}
