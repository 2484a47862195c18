//! Plugin memory, bounded twice: each instance by its own cap (`limits.memory_mb`, a
//! failed grow traps), and all instances together by a budget (`admin.plugin_memory_mb`,
//! default half the machine's memory). An instance holds its cap against the budget
//! from its creation to its drop, idle in a pool or not; when the budget is used up a
//! new instance is refused with a message naming the setting, after idle instances
//! were let go to make room.

use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::usage::Limits;

/// Bytes all instances may hold; `0` until set (then the default applies).
static LIMIT: AtomicU64 = AtomicU64::new(0);
/// Bytes the live instances hold.
static HELD: AtomicU64 = AtomicU64::new(0);

/// Sets the budget; `None` for the default.
pub fn set_budget_mb(mb: Option<u64>) {
    LIMIT.store(
        mb.map_or_else(default_budget, |mb| mb << 20),
        Ordering::Relaxed,
    );
}

/// Half of the machine's memory.
fn default_budget() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        (pages as u64).saturating_mul(size as u64) / 2
    } else {
        8 << 30
    }
}

fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => default_budget(),
        set => set,
    }
}

/// What the live instances hold, and the budget, in MiB (for listings).
pub fn usage_mb() -> (u64, u64) {
    (HELD.load(Ordering::Relaxed) >> 20, limit() >> 20)
}

/// An instance's share of the budget, given back when it drops.
#[derive(Debug)]
pub struct Reservation(u64);

impl Reservation {
    /// Holds nothing.
    pub fn none() -> Reservation {
        Reservation(0)
    }

    /// Takes `bytes` from the budget, or says why not.
    pub fn take(bytes: u64) -> Result<Reservation, String> {
        let limit = limit();
        HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(bytes).filter(|total| *total <= limit)
        })
        .map(|_| Reservation(bytes))
        .map_err(|held| {
            format!(
                "the plugins' memory budget is used up: live instances hold {} of {} MiB and this one needs {} (admin.plugin_memory_mb)",
                held >> 20,
                limit >> 20,
                bytes >> 20
            )
        })
    }

    pub fn bytes(&self) -> u64 {
        self.0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// The store's limiter: wasmtime's caps, plus how much memory the instance has grown
/// to (so a stateless plugin can be recycled before it hits its cap).
pub struct Limiter {
    caps: StoreLimits,
    pub memory: usize,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter {
            caps: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes())
                .trap_on_grow_failure(true)
                .build(),
            memory: 0,
        }
    }

    /// New caps for a new user of a pooled instance; what it has grown to stays.
    pub fn recap(&mut self, limits: &Limits) {
        let memory = self.memory;
        *self = Limiter::new(limits);
        self.memory = memory;
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory = self.memory.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_budget() {
        set_budget_mb(Some(100));
        let a = Reservation::take(60 << 20).unwrap();
        let err = Reservation::take(60 << 20).unwrap_err();
        assert!(err.contains("admin.plugin_memory_mb"), "{err}");
        drop(a);
        let b = Reservation::take(60 << 20).unwrap();
        assert_eq!(b.bytes(), 60 << 20);
        drop(b);
        set_budget_mb(None);
    }
}
