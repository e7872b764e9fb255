//! Writing replies straight into the client's buffer, so a large RANK or
//! STATS reply builds no intermediate value tree. Maps become RESP3 maps or,
//! for RESP2 clients, flat field/value arrays (Redis does that conversion).

use std::os::raw::{c_char, c_long};

use std::fmt::Write;
use std::marker::PhantomData;

use bandit_core::number::Shortest;
use redis_module::{raw, Context};

/// The reply being written for one command. It borrows the command's
/// context, so it cannot outlive the call it answers.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'ctx> {
    ctx: *mut raw::RedisModuleCtx,
    resp3: bool,
    replayed: bool,
    context: PhantomData<&'ctx Context>,
}

impl<'ctx> Reply<'ctx> {
    pub fn new(ctx: &'ctx Context) -> Self {
        // SAFETY: the context is the live one of the current command.
        let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) };
        let replayed = (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) as i32;
        Self {
            ctx: ctx.ctx,
            resp3: flags & (raw::REDISMODULE_CTX_FLAGS_RESP3 as i32) != 0,
            replayed: flags & replayed != 0,
            context: PhantomData,
        }
    }

    /// Whether the command comes from the primary (on a replica) or from
    /// the AOF being loaded, rather than from a client.
    pub fn from_primary_or_aof(self) -> bool {
        self.replayed
    }

    /// Whether the client speaks RESP3 (HELLO 3).
    pub fn is_resp3(self) -> bool {
        self.resp3
    }

    pub fn array(self, len: usize) {
        raw::reply_with_array(self.ctx, c_long::try_from(len).unwrap_or(c_long::MAX));
    }

    /// A map of `len` pairs; the caller writes 2·len items.
    pub fn map(self, len: usize) {
        raw::reply_with_map(self.ctx, c_long::try_from(len).unwrap_or(c_long::MAX));
    }

    pub fn bulk(self, bytes: &[u8]) {
        raw::reply_with_string_buffer(self.ctx, bytes.as_ptr().cast::<c_char>(), bytes.len());
    }

    /// A simple-string status such as OK. `status` must not contain CR or LF.
    pub fn simple(self, status: &'static std::ffi::CStr) {
        raw::reply_with_simple_string(self.ctx, status.as_ptr());
    }

    pub fn integer(self, value: i64) {
        raw::reply_with_long_long(self.ctx, value);
    }

    pub fn unsigned(self, value: u64) {
        self.integer(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// A double: a RESP3 double, or in RESP2 a bulk string at the shortest
    /// text that reads back as the same value (Redis' own RESP2 formatting
    /// prints 0.3 as 0.29999999999999999). Formatted on the stack: RANK
    /// WITHSCORES writes one per arm.
    pub fn double(self, value: f64) {
        if self.resp3 {
            raw::reply_with_double(self.ctx, value);
            return;
        }
        let mut text = StackText::default();
        // Cannot fail: the longest shortest-form f64 is far below the capacity.
        let _ = write!(text, "{}", Shortest(value));
        self.bulk(text.as_bytes());
    }

    pub fn doubles(self, values: &[f64]) {
        self.array(values.len());
        for &value in values {
            self.double(value);
        }
    }

    /// An error reply; `message` starts with its code (ERR, WRONGTYPE, …).
    pub fn error(self, message: &str) {
        // Error replies are one line: strip CR/LF, and NUL for the C string.
        let clean: Vec<u8> = message.bytes().filter(|b| !matches!(b, b'\r' | b'\n' | 0)).collect();
        let text = std::ffi::CString::new(clean).unwrap_or_default();
        // SAFETY: live context and a NUL-terminated string.
        unsafe {
            if let Some(reply_with_error) = raw::RedisModule_ReplyWithError {
                reply_with_error(self.ctx, text.as_ptr());
            }
        }
    }

    /// Writes a field name of a map.
    pub fn field(self, name: &str) {
        self.bulk(name.as_bytes());
    }
}

/// A fixed buffer that `write!` fills without allocating.
#[derive(Debug)]
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self { bytes: [0; 64], len: 0 }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl Write for StackText {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len.checked_add(text.len()).ok_or(std::fmt::Error)?;
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}
