// Fuzz input read as small numbers, and the `trace!` macro, for the model-based targets
// (`operations`, `store`). Each includes this file as a module of its own (`#[path]`,
// `#[macro_use]`), so the tests that compile a target's body alone (tests/fuzz_*.rs) need
// nothing else.

/// Prints what the harness does when `SHARDLOG_FUZZ_TRACE` is set (to replay a finding).
macro_rules! trace {
    ($($arg:tt)*) => {
        if std::env::var_os("SHARDLOG_FUZZ_TRACE").is_some() {
            eprintln!($($arg)*);
        }
    };
}

/// Bytes of fuzz input, read as small numbers; zeros once it runs out.
pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl Input<'_> {
    pub(crate) fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    #[allow(dead_code)] // not every target reads 16-bit numbers
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn coin(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub(crate) fn done(&self) -> bool {
        self.0.is_empty()
    }
}
