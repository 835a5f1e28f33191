//! The built-in guests: assembled from `guests/*/*.S` by build.rs and embedded in the binary, so
//! `mini-kvm run hello` needs no files.

/// The CPU mode a built-in guest starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// 16-bit real mode, loaded at 0x10000 with CS=DS=ES=SS=0x1000 (docs/memory-map.md).
    Real,
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
