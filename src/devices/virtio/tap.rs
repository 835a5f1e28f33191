//! A TAP device: a virtual Ethernet interface on the host whose other end is a file descriptor.
//! Every frame the host sends to the interface can be `read` from the descriptor, and every frame
//! `write`n to it arrives on the interface. virtio-net (net.rs) connects the guest's network card
//! to one.
//!
//! It is opened through /dev/net/tun with TUNSETIFF: creating the interface needs CAP_NET_ADMIN;
//! attaching to an existing one (`ip tuntap add NAME mode tap user $USER`) needs only to be its
//! owner. With IFF_VNET_HDR each frame carries the virtio-net header in front, as the guest's
//! driver writes and reads it, so frames pass through unchanged; with no offloads set
//! (TUNSETOFFLOAD 0) the header only ever says "a plain frame".

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::ioctl_iow_nr;

ioctl_iow_nr!(TUNSETIFF, 'T' as u32, 202, libc::c_int);
ioctl_iow_nr!(TUNSETOFFLOAD, 'T' as u32, 208, libc::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, 'T' as u32, 216, libc::c_int);

/// Interface names are at most 15 bytes (IFNAMSIZ, 16, with the NUL).
pub const MAX_NAME: usize = 15;

/// struct ifreq, as TUNSETIFF reads and fills it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct InterfaceRequest {
    name: [u8; 16],
    flags: libc::c_short,
    _rest: [u8; 22],
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "'{0}' is not a TAP interface name: give 1 to {MAX_NAME} letters, digits, '-' or '_' \
         (e.g. --net tap=tap0)"
    )]
    BadName(String),
    #[error("cannot open /dev/net/tun for the TAP device {name}: {source}{hint}")]
    OpenTun {
        name: String,
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot create or attach the TAP device {name}: {source}{hint}")]
    Attach {
        name: String,
        source: io::Error,
        hint: String,
    },
    #[error("cannot set up the TAP device {name} ({what}): {source}")]
    Setup {
        name: String,
        what: &'static str,
        source: io::Error,
    },
}

pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens the TAP interface `name`, creating it if it does not exist, in non-blocking mode,
    /// with a virtio-net header of `header_size` bytes on each frame.
    pub fn open(name: &str, header_size: usize) -> Result<Tap, TapError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(TapError::BadName(name.to_string()));
        }
        // SAFETY: open(2) with a NUL-terminated path; the descriptor is checked below.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let source = io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::ENOENT) => " (load the tun module: sudo modprobe tun)",
                Some(libc::EACCES) => " (ask for access to /dev/net/tun, or run as root)",
                _ => "",
            };
            return Err(TapError::OpenTun {
                name: name.to_string(),
                source,
                hint,
            });
        }
        // SAFETY: a descriptor we just opened and nobody else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut request = InterfaceRequest {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _rest: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `request` is laid out as.
        if unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut request) } < 0 {
            let source = io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EPERM) => format!(
                    " (creating a TAP device needs root or CAP_NET_ADMIN; or create it once for \
                     your user: sudo ip tuntap add {name} mode tap user $USER)"
                ),
                Some(libc::EBUSY) => " (another program has it open)".to_string(),
                Some(libc::EINVAL) => {
                    " (an interface of that name exists and is not a TAP device)".to_string()
                }
                _ => String::new(),
            };
            return Err(TapError::Attach {
                name: name.to_string(),
                source,
                hint,
            });
        }
        let setup = |what, result: libc::c_int| {
            if result < 0 {
                Err(TapError::Setup {
                    name: name.to_string(),
                    what,
                    source: io::Error::last_os_error(),
                })
            } else {
                Ok(())
            }
        };
        let size = header_size as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int from the pointer.
        setup("TUNSETVNETHDRSZ", unsafe {
            ioctl_with_ref(&file, TUNSETVNETHDRSZ(), &size)
        })?;
        // SAFETY: TUNSETOFFLOAD takes its flags by value: none.
        setup("TUNSETOFFLOAD", unsafe {
            ioctl_with_val(&file, TUNSETOFFLOAD(), 0)
        })?;
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One frame (with its header) into `buffer`; `WouldBlock` when none is waiting.
    pub fn receive(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.file.read(buffer)
    }

    /// Sends one frame (with its header).
    pub fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.file.write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
