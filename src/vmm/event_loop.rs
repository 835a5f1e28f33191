//! The VM's event loop: while the vCPU threads run guest code, one thread (the one that called
//! `Vm::run`) waits in a single `epoll_wait` for everything else: a vCPU thread ending, the
//! guest's input becoming readable, and events of devices (an ioeventfd a device registered,
//! for instance). Timers need no descriptor: the wait's timeout is the next flush tick or the
//! `--timeout` deadline, whichever comes first.
//!
//! Each descriptor is registered with a [`Token`] that says what it is; [`EventLoop::wait`]
//! hands back the tokens of the descriptors that are ready, and `Vm::run`'s loop acts on each.
//! The array epoll fills is made once; each wake-up returns its few tokens in a short `Vec`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// What a ready descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A vCPU thread has ended (an eventfd the threads write).
    VcpuEnded,
    /// The guest's input source (stdin) has bytes, or has ended.
    InputReadable,
    /// The guest asked for input, or made room for more (an eventfd).
    InputWake,
    /// The event source of the device handler with this index.
    Device(u32),
}

impl Token {
    fn to_data(self) -> u64 {
        match self {
            Token::VcpuEnded => 0,
            Token::InputReadable => 1,
            Token::InputWake => 2,
            Token::Device(index) => 0x1_0000_0000 | u64::from(index),
        }
    }

    fn from_data(data: u64) -> Token {
        match data {
            0 => Token::VcpuEnded,
            1 => Token::InputReadable,
            2 => Token::InputWake,
            device => Token::Device(device as u32),
        }
    }
}

/// A device's work that waits for a descriptor (an ioeventfd, a tap device, a timer): the
/// event loop calls [`EventHandler::ready`] on its thread when `fd` is readable.
pub trait EventHandler: Send {
    fn fd(&self) -> RawFd;
    fn ready(&mut self);
    /// Reported once per change to readable (EPOLLET) instead of at every wait while readable:
    /// for a source the handler may leave unread (a TAP device while the guest has no buffers).
    fn edge_triggered(&self) -> bool {
        false
    }
}

pub struct EventLoop {
    epoll: Epoll,
    ready: Vec<EpollEvent>,
}

impl EventLoop {
    /// Room for this many ready descriptors per wait: more than the loop ever registers.
    const EVENTS_PER_WAIT: usize = 16;

    pub fn new() -> io::Result<EventLoop> {
        Ok(EventLoop {
            epoll: Epoll::new()?,
            ready: vec![EpollEvent::default(); Self::EVENTS_PER_WAIT],
        })
    }

    /// Watches `fd` for input (level-triggered: it is reported at every wait while readable).
    pub fn add(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let event = EpollEvent::new(EventSet::IN, token.to_data());
        self.epoll.ctl(ControlOperation::Add, fd, event)
    }

    /// Watches `fd` for input, edge-triggered: reported once each time it becomes readable.
    pub fn add_edge_triggered(&self, fd: RawFd, token: Token) -> io::Result<()> {
        let event = EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, token.to_data());
        self.epoll.ctl(ControlOperation::Add, fd, event)
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Waits until a descriptor is ready, or `timeout` has passed (`None`: no limit), and
    /// returns the ready ones. A signal that interrupts the wait returns none.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<Token>> {
        // Rounded up: a wait cut short would only come back to wait again.
        let timeout_ms = timeout.map_or(-1, |t| {
            t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        let count = match self.epoll.wait(timeout_ms, &mut self.ready) {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(self.ready[..count]
            .iter()
            .map(|event| Token::from_data(event.data()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    use super::*;

    #[test]
    fn tokens_survive_the_round_trip_through_epoll_data() {
        for token in [
            Token::VcpuEnded,
            Token::InputReadable,
            Token::InputWake,
            Token::Device(0),
            Token::Device(7),
            Token::Device(u32::MAX),
        ] {
            assert_eq!(Token::from_data(token.to_data()), token);
        }
    }

    #[test]
    fn a_ready_descriptor_is_reported_with_its_token_until_it_is_read() {
        let mut events = EventLoop::new().unwrap();
        let quiet = EventFd::new(EFD_NONBLOCK).unwrap();
        let device = EventFd::new(EFD_NONBLOCK).unwrap();
        events.add(quiet.as_raw_fd(), Token::InputWake).unwrap();
        events.add(device.as_raw_fd(), Token::Device(3)).unwrap();
        assert_eq!(events.wait(Some(Duration::ZERO)).unwrap(), vec![]);
        device.write(1).unwrap();
        assert_eq!(events.wait(None).unwrap(), vec![Token::Device(3)]);
        // Level-triggered: still ready until read.
        assert_eq!(events.wait(None).unwrap(), vec![Token::Device(3)]);
        device.read().unwrap();
        assert_eq!(events.wait(Some(Duration::ZERO)).unwrap(), vec![]);
        events.remove(device.as_raw_fd()).unwrap();
        device.write(1).unwrap();
        assert_eq!(events.wait(Some(Duration::ZERO)).unwrap(), vec![]);
    }
}
