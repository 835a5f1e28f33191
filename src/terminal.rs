//! The user's terminal, when a guest takes keyboard input from it.
//!
//! A terminal normally hands a program whole lines, echoes what is typed, and turns Ctrl-C into
//! SIGINT. A guest that reads a keyboard wants every key as it is pressed, so when stdin is a
//! terminal and the guest first uses the keyboard controller, mini-kvm puts the terminal in raw
//! mode ([`enter_raw_mode`]): no line editing, no echo, no signals from keys. Output processing
//! stays on, so the guest's "\n" still starts a new line.
//!
//! Raw mode must never outlive mini-kvm, or the user's shell is left unusable. It is undone on
//! every way out: [`restore`] at the normal end and on errors (src/main.rs), a panic hook, and
//! handlers for SIGTERM, SIGHUP, SIGINT and SIGQUIT that restore the terminal and then die of the
//! signal as they would have.
//!
//! Since Ctrl-C now goes to the guest, mini-kvm takes QEMU's escape key: **Ctrl-A x** quits,
//! **Ctrl-A h** prints help, **Ctrl-A Ctrl-A** sends one Ctrl-A. [`TerminalInput`] filters these
//! out of the input before the guest sees it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use crate::console::RawStdin;
use std::sync::atomic::{AtomicBool, Ordering};

/// The terminal settings before raw mode, restored on the way out.
static SAVED: OnceLock<libc::termios> = OnceLock::new();
/// Raw mode is on.
static RAW: AtomicBool = AtomicBool::new(false);
/// The user pressed Ctrl-A x.
static QUIT: AtomicBool = AtomicBool::new(false);

const CTRL_A: u8 = 0x01;

pub const HELP: &str = "\
mini-kvm terminal keys (the guest gets every other key):
  Ctrl-A x        quit mini-kvm
  Ctrl-A h        this help
  Ctrl-A Ctrl-A   send Ctrl-A to the guest
";

/// Is standard input a terminal?
pub fn stdin_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Puts the terminal on stdin in raw mode (once; later calls do nothing). Returns whether raw
/// mode is on.
pub fn enter_raw_mode() -> bool {
    if RAW.load(Ordering::Acquire) || !stdin_is_terminal() {
        return RAW.load(Ordering::Acquire);
    }
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut settings: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid pointer.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut settings) } != 0 {
        return false;
    }
    let saved = *SAVED.get_or_init(|| settings);
    install_restore_hooks();

    let mut raw = saved;
    // Keys one by one, unechoed, Ctrl-C/Ctrl-Z/Ctrl-\ as plain bytes, Ctrl-S/Ctrl-Q too, CR
    // not turned into NL (the keyboard encoder handles both).
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    raw.c_iflag &= !(libc::IXON | libc::ICRNL | libc::BRKINT | libc::INPCK | libc::ISTRIP);
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    // SAFETY: a valid descriptor and a valid pointer.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
        return false;
    }
    RAW.store(true, Ordering::Release);
    let _ = writeln!(
        crate::console::stderr::stderr(),
        "mini-kvm: the keyboard goes to the guest; Ctrl-A x quits, Ctrl-A h for help"
    );
    true
}

/// Is the terminal in raw mode (so Ctrl-A keys are ours)?
pub fn is_raw() -> bool {
    RAW.load(Ordering::Acquire)
}

/// Puts the terminal back as it was. Safe to call at any time, any number of times, and from a
/// signal handler (tcsetattr is async-signal-safe; nothing here allocates or locks).
pub fn restore() {
    if RAW.swap(false, Ordering::AcqRel)
        && let Some(saved) = SAVED.get()
    {
        // SAFETY: a valid descriptor and a pointer to settings tcgetattr gave us.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

/// Set when the user asks to quit (Ctrl-A x): the VM's event loop (src/vmm/event_loop.rs) stops
/// the guest then.
pub fn quit_flag() -> &'static AtomicBool {
    &QUIT
}

fn install_restore_hooks() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        extern "C" fn on_signal(signal: libc::c_int) {
            restore();
            // Die of the signal, as without this handler.
            // SAFETY: signal and raise are async-signal-safe.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        }
        for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        }
    });
}

/// The guest's input from a terminal: stdin with the Ctrl-A keys taken out while raw mode is on.
pub struct TerminalInput<R> {
    inner: R,
    /// The last byte was Ctrl-A: the next one is a command for mini-kvm.
    after_escape: bool,
}

impl TerminalInput<RawStdin> {
    pub fn stdin() -> TerminalInput<RawStdin> {
        TerminalInput::new(RawStdin)
    }
}

impl<R: AsRawFd> AsRawFd for TerminalInput<R> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl<R: Read> TerminalInput<R> {
    pub fn new(inner: R) -> TerminalInput<R> {
        TerminalInput {
            inner,
            after_escape: false,
        }
    }

    /// Removes the Ctrl-A keys from `buf[..n]` and acts on them; returns the bytes left and
    /// whether the user asked to quit.
    fn filter(&mut self, buf: &mut [u8], n: usize) -> (usize, bool) {
        let mut kept = 0;
        for i in 0..n {
            let byte = buf[i];
            if std::mem::take(&mut self.after_escape) {
                match byte {
                    b'x' | b'X' => return (kept, true),
                    b'h' | b'H' | b'?' => {
                        let _ = write!(crate::console::stderr::stderr(), "\n{HELP}");
                    }
                    CTRL_A => {
                        buf[kept] = CTRL_A;
                        kept += 1;
                    }
                    _ => {} // unknown command: dropped, as QEMU does
                }
            } else if byte == CTRL_A && is_raw() {
                self.after_escape = true;
            } else {
                buf[kept] = byte;
                kept += 1;
            }
        }
        (kept, false)
    }
}

impl<R: Read> Read for TerminalInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Ok(0);
        }
        let (kept, quit) = self.filter(buf, n);
        if quit {
            QUIT.store(true, Ordering::Release);
            // End the guest's input: whoever waits for it wakes up.
            return Ok(0);
        }
        if kept == 0 {
            // Only Ctrl-A keys arrived: nothing for the guest yet, which is not end of input.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_keys_are_filtered_only_in_raw_mode() {
        // Not raw: Ctrl-A is an ordinary byte.
        let mut input = TerminalInput::new(&b"a\x01xb"[..]);
        let mut buf = [0u8; 16];
        let n = input.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\x01xb");

        // Raw (pretended: the flag only; the terminal is not touched).
        RAW.store(true, Ordering::Release);
        let mut input = TerminalInput::new(&b""[..]);
        let mut buf = *b"a\x01\x01b\x01hc";
        let (n, quit) = input.filter(&mut buf, 7);
        assert_eq!((&buf[..n], quit), (&b"a\x01bc"[..], false));
        let mut buf = *b"d\x01xe";
        let (n, quit) = input.filter(&mut buf, 4);
        assert_eq!((&buf[..n], quit), (&b"d"[..], true));
        RAW.store(false, Ordering::Release);
    }
}
