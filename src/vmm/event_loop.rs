//! The VM's event loop: while the vCPU threads run guest code, one thread (the one that called
//! `Vm::run`) waits in a single `epoll_wait` for everything else: a vCPU thread ending, the
//! guest's input becoming readable, and events of devices (an ioeventfd a device registered,
//! for instance). Timers need no descriptor: the wait's timeout is the next flush tick or the
//! `--timeout` deadline, whichever comes first.
//!
//! Each descriptor is registered with a [`Token`] that says what it is; [`EventLoop::wait`]
//! hands back the tokens of the descriptors that are ready, and [`Watcher::watch`] acts on each:
//! it also flushes the guest's output, enforces `--timeout`, and notices a guest that can never
//! run again.
//! The array epoll fills is made once; each wake-up returns its few tokens in a short `Vec`.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::stats::LiveCounters;
use super::vcpus::VcpuSet;
use crate::console::{GuestInput, GuestOutput, SourceState};

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

/// Why the watcher stopped the vCPUs, when no vCPU ended the guest itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedBy {
    Timeout,
    Cancel,
    Quit,
    /// Every CPU halted with interrupts off (or never started): nothing can wake the guest.
    Idle,
}

/// The event loop of a running VM, with its two times: the next flush tick and
/// the `--timeout` deadline, which bound each wait (no timer descriptors to create per VM).
pub struct Watcher {
    events: EventLoop,
    /// Device work, each registered as `Token::Device(its index)`.
    handlers: Vec<Box<dyn EventHandler>>,
    next_tick: Instant,
    deadline: Option<Instant>,
    /// The input source's descriptor while the loop polls it.
    polled_input: Option<RawFd>,
}

impl Watcher {
    // Partial output lines are flushed now and then, so that a prompt or a progress line shows
    // up even before its newline.
    const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
    // With the irqchip, `hlt` waits inside KVM and never tells us. A guest that has made no
    // exit for IDLE_CHECK is paused and looked at: if every CPU is halted with interrupts off,
    // it has ended. A vCPU busy in the VMM (waiting for input) does not pause in PATIENCE.
    const IDLE_CHECK: Duration = Duration::from_secs(1);
    const PATIENCE: Duration = Duration::from_millis(100);

    /// Everything that can fail is made here, before any vCPU runs.
    pub fn new(
        timeout: Option<Duration>,
        handlers: Vec<Box<dyn EventHandler>>,
    ) -> std::io::Result<Watcher> {
        let now = Instant::now();
        let events = EventLoop::new()?;
        for (index, handler) in handlers.iter().enumerate() {
            let token = Token::Device(index as u32);
            if handler.edge_triggered() {
                events.add_edge_triggered(handler.fd(), token)?;
            } else {
                events.add(handler.fd(), token)?;
            }
        }
        Ok(Watcher {
            events,
            handlers,
            next_tick: now + Self::FLUSH_INTERVAL,
            deadline: timeout.map(|limit| now + limit),
            polled_input: None,
        })
    }

    /// Waits until a vCPU ends the guest (`None`), or the watcher stops it (why).
    pub fn watch(
        &mut self,
        set: &mut VcpuSet,
        live: &LiveCounters,
        output: &GuestOutput,
        input: &GuestInput,
        cancel: &AtomicBool,
        quit: &AtomicBool,
    ) -> std::io::Result<Option<StoppedBy>> {
        self.events.add(set.end_fd(), Token::VcpuEnded)?;
        if let Some(wake) = input.wake_fd() {
            self.events.add(wake, Token::InputWake)?;
        }
        let mut exits_seen = live.exits();
        let mut idle_since = Instant::now();
        loop {
            if cancel.load(Ordering::Acquire) {
                return Ok(Some(StoppedBy::Cancel));
            }
            if quit.load(Ordering::Acquire) {
                return Ok(Some(StoppedBy::Quit));
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                return Ok(Some(StoppedBy::Timeout));
            }
            if now >= self.next_tick {
                self.next_tick = now + Self::FLUSH_INTERVAL;
                output.flush_without_waiting();
                let exits = live.exits();
                if exits != exits_seen {
                    exits_seen = exits;
                    idle_since = now;
                } else if idle_since.elapsed() >= Self::IDLE_CHECK {
                    if let Some(cpus) = set.pause(Self::PATIENCE) {
                        if cpus.iter().all(|cpu| cpu.is_idle_for_good()) {
                            return Ok(Some(StoppedBy::Idle));
                        }
                        set.resume();
                    }
                    idle_since = Instant::now();
                }
            }
            let next_time = self
                .deadline
                .map_or(self.next_tick, |d| d.min(self.next_tick));
            let mut wait = next_time.saturating_duration_since(Instant::now());
            if let Some(input_wait) = self.follow_input(input) {
                wait = wait.min(input_wait);
            }
            for token in self.events.wait(Some(wait))? {
                match token {
                    Token::VcpuEnded => {
                        if set.take_ends() {
                            return Ok(None);
                        }
                    }
                    Token::InputReadable => input.fill(),
                    Token::InputWake => input.clear_wake(),
                    Token::Device(index) => {
                        if let Some(handler) = self.handlers.get_mut(index as usize) {
                            handler.ready();
                        }
                    }
                }
            }
        }
    }

    /// Polls the input source while the guest wants input and has room for it, and stops
    /// polling otherwise (back-pressure). Returns how long the next wait may block: not at
    /// all when the source is always ready (a file), which is then read once per turn.
    fn follow_input(&mut self, input: &GuestInput) -> Option<Duration> {
        let state = input.source_state();
        let wanted = match state {
            SourceState::Poll(fd) => Some(fd),
            SourceState::Ready | SourceState::Idle => None,
        };
        if self.polled_input != wanted {
            if let Some(fd) = self.polled_input.take() {
                let _ = self.events.remove(fd);
            }
            if let Some(fd) = wanted {
                match self.events.add(fd, Token::InputReadable) {
                    Ok(()) => self.polled_input = Some(fd),
                    // epoll refuses regular files and /dev/null, which never block: read them
                    // whenever there is room.
                    Err(_) => input.source_is_always_ready(),
                }
            }
        }
        if state == SourceState::Ready {
            input.fill();
            return Some(Duration::ZERO);
        }
        None
    }
}
