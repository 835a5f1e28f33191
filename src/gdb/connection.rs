//! gdb's end of the wire: a TCP or Unix socket, listened on before the guest starts.
//!
//! Reads wait in `poll` in short slices, so that a stub blocked on gdb notices the guest ending
//! (`--timeout`, Ctrl-A x) and lets go, and turns away a second gdb with a message; writes are
//! gathered and sent as whole packets.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gdbstub::conn::{Connection, ConnectionExt};

use crate::config::GdbAddress;
use crate::vmm::debug::DebugControl;

/// How long one wait for gdb's bytes lasts before the stub looks at the guest again.
const SLICE: Duration = Duration::from_millis(50);

/// A listening socket, bound before the guest starts (so that a port in use is an error then).
pub enum Listener {
    Tcp(TcpListener),
    /// The socket and the file it made: removed when gdb connects (the stub's thread may not
    /// unlink files once it is filtered), or at the end if gdb never came.
    Unix(UnixListener, Option<SocketFile>),
}

/// A Unix socket's name in the file system, and the private directory mini-kvm made for it
/// (`--gdb` alone), both removed once nobody needs to find the socket any more.
pub struct SocketFile {
    path: PathBuf,
    private_dir: Option<PathBuf>,
}

impl SocketFile {
    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.private_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Listener {
    /// Binds `address` for guest `name`; the error says what to do.
    pub fn bind(address: &GdbAddress, name: &str) -> Result<Listener, String> {
        let listener = match address {
            GdbAddress::Tcp(port) => TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
                .map(Listener::Tcp)
                .map_err(|error| {
                    format!(
                        "--gdb: cannot listen on 127.0.0.1:{port}: {error} (another program, or \
                         another mini-kvm, has it: choose another port, or tcp:0 for a free one)"
                    )
                })?,
            GdbAddress::Unix(path) => {
                let listener = bind_owner_only(path).map_err(|error| {
                    format!(
                        "--gdb: cannot make the socket {}: {error} (the directory must exist and \
                         be writable, and no file may have that name)",
                        path.display()
                    )
                })?;
                Listener::Unix(
                    listener,
                    Some(SocketFile {
                        path: path.clone(),
                        private_dir: None,
                    }),
                )
            }
            GdbAddress::Private => {
                let (listener, file) = bind_in_private_dir(name).map_err(|error| {
                    format!("--gdb: cannot make a private directory for the socket: {error}")
                })?;
                Listener::Unix(listener, Some(file))
            }
        };
        listener.set_nonblocking()?;
        Ok(listener)
    }

    fn set_nonblocking(&self) -> Result<(), String> {
        match self {
            Listener::Tcp(listener) => listener.set_nonblocking(true),
            Listener::Unix(listener, _) => listener.set_nonblocking(true),
        }
        .map_err(|error| format!("--gdb: {error}"))
    }

    /// What gdb's `target remote` takes: HOST:PORT, or the socket's path.
    pub fn target(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |address| address.to_string()),
            Listener::Unix(_, file) => file
                .as_ref()
                .map_or_else(|| "?".into(), |file| file.path.display().to_string()),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(listener) => listener.as_raw_fd(),
            Listener::Unix(listener, _) => listener.as_raw_fd(),
        }
    }

    /// Answers every gdb now waiting to connect with an error packet, which gdb prints as
    /// "Remote failure reply: E.<why>", and closes its connection. (Only TCP: a Unix socket
    /// loses its name once gdb is connected.) Each refused client gets a quarter of a second at
    /// most, and no more than [`Listener::REFUSED_PER_CALL`] are served per call: a client that
    /// trickles bytes, or a stream of them, cannot hold the stub (nor the run's end) up.
    fn turn_away(&self, why: &str) {
        let Listener::Tcp(listener) = self else {
            return;
        };
        let reply = packet(&format!("E.{why}"));
        for _ in 0..Self::REFUSED_PER_CALL {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            // Read what gdb sends until it closes, within the time allowed: a socket closed
            // with bytes unread resets the connection, and gdb would lose the answer. (The
            // socket blocks: Linux's accept does not pass the listener's O_NONBLOCK on.)
            let _ = Write::write_all(&mut stream, &reply);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let deadline = std::time::Instant::now() + Self::REFUSAL_TIME;
            let mut sink = [0u8; 512];
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero()
                    || !wait_readable(stream.as_raw_fd(), left).unwrap_or(false)
                    || !Read::read(&mut stream, &mut sink).is_ok_and(|read| read > 0)
                {
                    break;
                }
            }
        }
    }

    /// How long a refused client may take to read its answer and close.
    const REFUSAL_TIME: Duration = Duration::from_millis(250);
    /// How many waiting clients one call turns away before the stub looks at its own work.
    const REFUSED_PER_CALL: usize = 4;

    /// Waits for gdb; `None` if the guest ended first (`--timeout`).
    pub fn accept(&mut self, control: &DebugControl) -> Option<io::Result<GdbConnection>> {
        loop {
            if control.is_over() {
                return None;
            }
            match wait_readable(self.fd(), SLICE) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(error) => return Some(Err(error)),
            }
            let stream = match self {
                Listener::Tcp(listener) => listener.accept().and_then(|(stream, _)| {
                    stream.set_nonblocking(false)?;
                    // Packets are small and each waits for an answer: send them at once.
                    stream.set_nodelay(true)?;
                    Ok(Stream::Tcp(stream))
                }),
                Listener::Unix(listener, file) => listener.accept().and_then(|(stream, _)| {
                    stream.set_nonblocking(false)?;
                    // Nobody else connects to a socket without a name.
                    if let Some(file) = file.take() {
                        file.remove();
                    }
                    Ok(Stream::Unix(stream))
                }),
            };
            match stream {
                Ok(stream) => return Some(Ok(GdbConnection::new(stream))),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// A remote-protocol packet (after gdb's acknowledgement): `+$DATA#CHECKSUM`.
fn packet(data: &str) -> Vec<u8> {
    let checksum = data.bytes().fold(0u8, |sum, byte| sum.wrapping_add(byte));
    format!("+${data}#{checksum:02x}").into_bytes()
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, file) = self
            && let Some(file) = file.take()
        {
            file.remove();
        }
    }
}

/// Binds a Unix socket at `path` that only this user can connect to (connecting needs write
/// permission on the socket file), whatever the umask: it is bound in a directory of our own
/// (mode 0700, beside `path`, so nobody can reach it meanwhile), made 0600 there, then linked to
/// `path`, which fails if anything has that name (an attacker's symlink included).
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let staging = make_private_dir(&parent.join(".mini-kvm-gdb-"))?;
    let staged = staging.join("socket");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    bound
}

/// `--gdb` alone: a new directory only this user can enter (mode 0700, in `$XDG_RUNTIME_DIR`
/// when it is set, else in the temporary directory), with the socket `NAME.sock` in it.
fn bind_in_private_dir(name: &str) -> io::Result<(UnixListener, SocketFile)> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = make_private_dir(&base.join("mini-kvm-gdb-"))?;
    // The guest's name as a file name: letters, digits, '.', '-' and '_' only, and short enough
    // for a socket's path (108 bytes at most).
    let name: String = name
        .chars()
        .take(32)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let path = dir.join(format!("{name}.sock"));
    // The directory keeps everyone else out; the socket is made 0600 as well, should the
    // directory's mode ever be changed.
    let bound = UnixListener::bind(&path).and_then(|listener| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    });
    match bound {
        Ok(listener) => Ok((
            listener,
            SocketFile {
                path,
                private_dir: Some(dir),
            },
        )),
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&dir);
            Err(error)
        }
    }
}

/// A new directory `PREFIX` + six random characters, mode 0700 (`mkdtemp`).
fn make_private_dir(prefix: &Path) -> io::Result<PathBuf> {
    let mut template = prefix.as_os_str().as_bytes().to_vec();
    template.extend_from_slice(b"XXXXXX\0");
    // SAFETY: a NUL-terminated, writable template ending in XXXXXX, as mkdtemp requires; it
    // writes the directory's name into it.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if made.is_null() {
        return Err(io::Error::last_os_error());
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(template)))
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(stream) => stream.as_raw_fd(),
            Stream::Unix(stream) => stream.as_raw_fd(),
        }
    }
}

/// One gdb session's socket, with a bounded buffer each way.
pub struct GdbConnection {
    stream: Stream,
    input: Box<[u8; 4096]>,
    /// `input[start..end]` is read and not yet taken.
    start: usize,
    end: usize,
    output: Vec<u8>,
    /// Set once the session starts: reads give up when the guest is over.
    control: Option<std::sync::Arc<DebugControl>>,
    /// The listening socket, kept to turn away a second gdb (and to remove a Unix socket's
    /// file at the end).
    listener: Option<Listener>,
    /// Why another gdb is turned away.
    busy: String,
    /// When a read first saw the guest over.
    over_since: Option<std::time::Instant>,
}

impl GdbConnection {
    const OUTPUT_LIMIT: usize = 4096;
    /// How long gdb is still heard once the guest is over.
    const AFTER_THE_END: Duration = Duration::from_millis(500);

    fn new(stream: Stream) -> GdbConnection {
        GdbConnection {
            stream,
            input: Box::new([0; 4096]),
            start: 0,
            end: 0,
            output: Vec::with_capacity(Self::OUTPUT_LIMIT),
            control: None,
            listener: None,
            busy: String::new(),
            over_since: None,
        }
    }

    /// Starts the session: reads give up once `control` says the guest is over, and other gdbs
    /// connecting to `listener` are turned away (for guest `name`).
    pub fn start_session(
        &mut self,
        control: std::sync::Arc<DebugControl>,
        listener: Listener,
        name: &str,
    ) {
        self.control = Some(control);
        self.listener = Some(listener);
        self.busy =
            format!("mini-kvm: guest '{name}' has a gdb attached already, and takes one at a time");
    }

    /// Is a byte from gdb ready, waiting at most `patience` for one?
    pub fn byte_ready(&mut self, patience: Duration) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        self.turn_away_others();
        wait_readable(self.stream.fd(), patience)
    }

    fn turn_away_others(&self) {
        if let Some(listener) = &self.listener {
            listener.turn_away(&self.busy);
        }
    }

    /// An error once the guest has been over for [`Self::AFTER_THE_END`]: the session is cut.
    fn check_guest_end(&mut self) -> io::Result<()> {
        let over = self
            .control
            .as_ref()
            .is_some_and(|control| control.is_over());
        if over {
            let since = *self.over_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= Self::AFTER_THE_END {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the guest has ended",
                ));
            }
        }
        Ok(())
    }

    /// Reads what gdb sent into the buffer, waiting for it in slices; an error at end of
    /// stream or when the guest is over.
    fn fill(&mut self) -> io::Result<()> {
        // The guest's end is checked at every read, not only while gdb is quiet: a client that
        // never stops sending must not keep the run alive past its end (--timeout). Once the
        // guest is over, what gdb still says (its acknowledgement of the exit status) is read
        // for a moment more, then the session is cut.
        loop {
            self.check_guest_end()?;
            if wait_readable(self.stream.fd(), SLICE)? {
                break;
            }
            self.turn_away_others();
        }
        let read = match &mut self.stream {
            Stream::Tcp(stream) => Read::read(stream, &mut self.input[..]),
            Stream::Unix(stream) => Read::read(stream, &mut self.input[..]),
        }?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "gdb closed the connection",
            ));
        }
        self.start = 0;
        self.end = read;
        Ok(())
    }
}

impl Connection for GdbConnection {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.output.push(byte);
        if self.output.len() >= Self::OUTPUT_LIMIT {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what was gathered. A gdb that does not read its answers fills the socket: the
    /// stub then waits in slices and gives up once the guest is over, as reads do.
    fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.output.len() {
            self.check_guest_end()?;
            if !wait_writable(self.stream.fd(), SLICE)? {
                continue;
            }
            let rest = &self.output[sent..];
            // Without waiting (the socket itself blocks, and a blocking send waits for room
            // for all of it), and without SIGPIPE (a closed connection is an error).
            // SAFETY: the pointer and length are those of `rest`, valid for the call.
            let written = unsafe {
                libc::send(
                    self.stream.fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            match written {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                count if count > 0 => sent += count as usize,
                _ => {
                    let error = io::Error::last_os_error();
                    match error.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                        _ => return Err(error),
                    }
                }
            }
        }
        self.output.clear();
        Ok(())
    }
}

impl ConnectionExt for GdbConnection {
    fn read(&mut self) -> io::Result<u8> {
        if self.start == self.end {
            self.fill()?;
        }
        let byte = self.input[self.start];
        self.start += 1;
        Ok(byte)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if self.start == self.end && !wait_readable(self.stream.fd(), Duration::ZERO)? {
            return Ok(None);
        }
        if self.start == self.end {
            self.fill()?;
        }
        Ok(Some(self.input[self.start]))
    }
}

/// Waits up to `patience` for `fd` to be readable (or closed).
fn wait_readable(fd: RawFd, patience: Duration) -> io::Result<bool> {
    wait_for(fd, libc::POLLIN, patience)
}

/// Waits up to `patience` for `fd` to take more bytes (or be closed).
fn wait_writable(fd: RawFd, patience: Duration) -> io::Result<bool> {
    wait_for(fd, libc::POLLOUT, patience)
}

/// Waits up to `patience` for `events` on `fd` (an error or a hang-up counts: the next read or
/// write reports it).
fn wait_for(fd: RawFd, events: libc::c_short, patience: Duration) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll, 1, patience.as_millis() as libc::c_int) };
    match ready {
        -1 => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(error)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
