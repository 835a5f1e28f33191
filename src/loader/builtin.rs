//! The built-in guests: assembled from `guests/*/*.S` by build.rs and embedded in the binary, so
//! `mini-kvm run hello` needs no files.

/// The CPU mode a guest starts in (docs/memory-map.md has the register values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// 16-bit real mode, loaded at 0x10000 with CS=DS=ES=SS=0x1000.
    Real,
    /// 32-bit protected mode, flat segments; with `paging`, 4 MiB pages mapping RAM at 0 and at
    /// 0x80000000.
    Protected { paging: bool },
    /// 64-bit long mode, RAM identity-mapped with 2 MiB pages.
    Long,
}

impl GuestMode {
    /// How `mini-kvm list` and messages name the mode.
    pub fn name(self) -> &'static str {
        match self {
            GuestMode::Real => "real mode",
            GuestMode::Protected { paging: false } => "protected mode",
            GuestMode::Protected { paging: true } => "protected mode with paging",
            GuestMode::Long => "long mode",
        }
    }
}

/// One built-in guest program.
#[derive(Debug)]
pub struct BuiltinGuest {
    pub name: &'static str,
    /// What the guest demonstrates (its source's `# summary:` line).
    pub summary: &'static str,
    pub mode: GuestMode,
    /// The flat binary image.
    pub image: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/builtin_guests.rs"));

/// Every built-in guest, in `mini-kvm list` order.
pub fn builtin_guests() -> &'static [BuiltinGuest] {
    BUILTIN_GUESTS
}

/// The built-in guest called `name`, if there is one.
pub fn builtin_guest(name: &str) -> Option<&'static BuiltinGuest> {
    BUILTIN_GUESTS.iter().find(|guest| guest.name == name)
}
