//! Writing replies straight into the client's buffer, so a large RANK or
//! STATS reply builds no intermediate value tree. Maps become RESP3 maps or,
//! for RESP2 clients, flat field/value arrays (Redis does that conversion).

use std::os::raw::{c_char, c_long};

use redis_module::{raw, Context};

/// The reply being written for one command.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    ctx: *mut raw::RedisModuleCtx,
}

impl Reply {
    pub fn new(ctx: &Context) -> Self {
        Self { ctx: ctx.ctx }
    }

    /// Whether the client speaks RESP3 (HELLO 3).
    pub fn is_resp3(self) -> bool {
        // SAFETY: the context is the live one of the current command.
        let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(self.ctx)) };
        flags & (raw::REDISMODULE_CTX_FLAGS_RESP3 as i32) != 0
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

    /// A double: RESP3 double, or in RESP2 the bulk string Redis formats.
    pub fn double(self, value: f64) {
        raw::reply_with_double(self.ctx, value);
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
