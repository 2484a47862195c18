//! A codec plugin: a line protocol. Each `\n`-terminated line is a message; its first
//! word is exposed as `codec.command` for routing. Answers get their `\n` back.

use std::cell::RefCell;

use l7mp_plugin_sdk::codec::export_codec;
use l7mp_plugin_sdk::codec::exports::l7mp::plugin::codec::{
    Connection, Guest, GuestConnection, Message,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Longest line accepted; a longer one closes the connection.
    max_line: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_line: 64 * 1024 }
    }
}

struct Lines {
    config: Config,
    partial: RefCell<Vec<u8>>,
}

impl GuestConnection for Lines {
    fn open(_metadata: String, config: String) -> Result<Connection, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        Ok(Connection::new(Lines { config, partial: RefCell::new(Vec::new()) }))
    }

    fn decode(&self, data: Vec<u8>) -> Result<Vec<Message>, String> {
        let mut partial = self.partial.borrow_mut();
        partial.extend_from_slice(&data);
        let mut messages = Vec::new();
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).take(end).collect();
            let command = line
                .split(|b| b.is_ascii_whitespace())
                .next()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .unwrap_or_default();
            let metadata = serde_json::json!({ "command": command }).to_string();
            messages.push(Message { payload: line, metadata: Some(metadata) });
        }
        if partial.len() > self.config.max_line {
            return Err(format!("a line longer than {} bytes", self.config.max_line));
        }
        Ok(messages)
    }

    fn encode(&self, message: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut line = message;
        line.push(b'\n');
        Ok(line)
    }
}

struct Plugin;

impl Guest for Plugin {
    type Connection = Lines;
}

export_codec!(Plugin);
