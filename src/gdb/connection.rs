//! gdb's end of the wire: a TCP or Unix socket, listened on before the guest starts.
//!
//! Reads wait in `poll` in short slices, so that a stub blocked on gdb notices the guest ending
//! (`--timeout`, Ctrl-A x) and lets go, and turns away a second gdb with a message; writes are
//! gathered and sent as whole packets.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use gdbstub::conn::{Connection, ConnectionExt};

use crate::config::GdbAddress;
use crate::vmm::debug::DebugControl;

/// How long one wait for gdb's bytes lasts before the stub looks at the guest again.
const SLICE: Duration = Duration::from_millis(50);

/// A listening socket, bound before the guest starts (so that a port in use is an error then).
pub enum Listener {
    Tcp(TcpListener),
    /// The socket and the path it made: removed when gdb connects (the stub's thread may not
    /// unlink files once it is filtered), or at the end if gdb never came.
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// Binds `address`; the error says what to do.
    pub fn bind(address: &GdbAddress) -> Result<Listener, String> {
        let listener = match address {
            GdbAddress::Tcp(port) => TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
                .map(Listener::Tcp)
                .map_err(|error| {
                    format!(
                        "--gdb: cannot listen on 127.0.0.1:{port}: {error} (another program, or \
                         another mini-kvm, has it: choose another port, or 0 for a free one)"
                    )
                })?,
            GdbAddress::Unix(path) => UnixListener::bind(path)
                .map(|listener| Listener::Unix(listener, Some(path.clone())))
                .map_err(|error| {
                    format!(
                        "--gdb: cannot make the socket {}: {error} (the directory must exist, \
                         and no file may have that name)",
                        path.display()
                    )
                })?,
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
            Listener::Unix(_, path) => path
                .as_ref()
                .map_or_else(|| "?".into(), |path| path.display().to_string()),
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
    /// loses its name once gdb is connected.)
    fn turn_away(&self, why: &str) {
        let Listener::Tcp(listener) = self else {
            return;
        };
        let reply = packet(&format!("E.{why}"));
        while let Ok((mut stream, _)) = listener.accept() {
            // Read what gdb sends until it closes (or half a second passes): a socket closed
            // with bytes unread resets the connection, and gdb would lose the answer. (The
            // socket blocks: Linux's accept does not pass the listener's O_NONBLOCK on.)
            let _ = Write::write_all(&mut stream, &reply);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 512];
            while wait_readable(stream.as_raw_fd(), Duration::from_millis(500)).unwrap_or(false)
                && Read::read(&mut stream, &mut sink).is_ok_and(|read| read > 0)
            {}
        }
    }

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
                Listener::Unix(listener, path) => listener.accept().and_then(|(stream, _)| {
                    stream.set_nonblocking(false)?;
                    // Nobody else connects to a socket without a name.
                    if let Some(path) = path.take() {
                        let _ = std::fs::remove_file(path);
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
        if let Listener::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
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
}

impl GdbConnection {
    const OUTPUT_LIMIT: usize = 4096;

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

    /// Reads what gdb sent into the buffer, waiting for it in slices; an error at end of
    /// stream or when the guest is over.
    fn fill(&mut self) -> io::Result<()> {
        while !wait_readable(self.stream.fd(), SLICE)? {
            self.turn_away_others();
            if self
                .control
                .as_ref()
                .is_some_and(|control| control.is_over())
            {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the guest has ended",
                ));
            }
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

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Tcp(stream) => Write::write_all(stream, &self.output),
            Stream::Unix(stream) => Write::write_all(stream, &self.output),
        }?;
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
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
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
