//! `mqtt-codec`: frames MQTT (3.1, 3.1.1 and 5.0) over TCP, UNIX sockets or UDP, so
//! rules can route on MQTT's own fields. Each message is one whole MQTT packet; the
//! metadata of a message, merged under `codec`, carries its `type` and:
//! - CONNECT: `client_id`, `username` (when set), `protocol_level`, `keepalive`,
//!   `clean_start`;
//! - PUBLISH: `topic`.
//!
//! So `match: {op: starts, path: /codec/client_id, value: "sensor-"}` routes sensors.
//! MQTT packets delimit themselves, so `encode` passes the bytes back unchanged.
//!
//! ```yaml
//! codec: {plugin: mqtt, config: {max_packet: 1048576, require_connect: true}}
//! ```

use std::cell::RefCell;

use l7mp_plugin_sdk::codec::export_codec;
use l7mp_plugin_sdk::codec::exports::l7mp::plugin::codec::{
    Connection, Guest, GuestConnection, Message,
};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    max_packet: usize,
    require_connect: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_packet: 1 << 20, require_connect: true }
    }
}

struct Mqtt {
    config: Config,
    buffer: RefCell<Vec<u8>>,
    seen_connect: RefCell<bool>,
}

const TYPES: [&str; 16] = [
    "RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
    "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT",
    "AUTH",
];

/// The remaining length (a variable byte integer) after the first byte: `(value,
/// bytes used)`, `None` when more bytes are needed.
fn varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(4) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err("malformed remaining length".into());
    }
    Ok(None)
}

/// A reader of MQTT's length-prefixed fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("packet too short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn binary(&mut self) -> Result<&'a [u8], String> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.binary()?.to_vec()).map_err(|_| "string is not UTF-8".into())
    }
    fn skip_properties(&mut self) -> Result<(), String> {
        let (len, used) = varint(self.0)?.ok_or("truncated properties")?;
        self.take(used + len).map(|_| ())
    }
}

fn connect_fields(body: &[u8]) -> Result<Map<String, Value>, String> {
    let mut f = Fields(body);
    let protocol = f.string()?;
    if protocol != "MQTT" && protocol != "MQIsdp" {
        return Err(format!("CONNECT for protocol {protocol:?}, not MQTT"));
    }
    let level = f.u8()?;
    let flags = f.u8()?;
    let keepalive = f.u16()?;
    if level >= 5 {
        f.skip_properties()?;
    }
    let client_id = f.string()?;
    let mut out = Map::new();
    out.insert("client_id".into(), client_id.into());
    out.insert("protocol_level".into(), level.into());
    out.insert("keepalive".into(), keepalive.into());
    out.insert("clean_start".into(), (flags & 0x02 != 0).into());
    if flags & 0x04 != 0 {
        if level >= 5 {
            f.skip_properties()?;
        }
        f.string()?; // will topic
        f.binary()?; // will payload
    }
    if flags & 0x80 != 0 {
        out.insert("username".into(), f.string()?.into());
    }
    Ok(out)
}

impl Mqtt {
    /// One packet's metadata.
    fn describe(&self, kind: usize, body: &[u8]) -> Result<Value, String> {
        let mut fields = match kind {
            1 => connect_fields(body)?,
            3 => {
                let mut m = Map::new();
                m.insert("topic".into(), Fields(body).string()?.into());
                m
            }
            _ => Map::new(),
        };
        fields.insert("type".into(), TYPES[kind].into());
        Ok(Value::Object(fields))
    }
}

impl GuestConnection for Mqtt {
    fn open(_metadata: String, config: String) -> Result<Connection, String> {
        let config: Config =
            serde_json::from_str(&config).map_err(|e| format!("mqtt: config: {e}"))?;
        Ok(Connection::new(Mqtt {
            config,
            buffer: RefCell::new(Vec::new()),
            seen_connect: RefCell::new(false),
        }))
    }

    fn decode(&self, data: Vec<u8>) -> Result<Vec<Message>, String> {
        let mut buffer = self.buffer.borrow_mut();
        buffer.extend_from_slice(&data);
        let mut messages = Vec::new();
        // A client that does not open with CONNECT is refused at its first byte.
        if self.config.require_connect && !*self.seen_connect.borrow() {
            if let Some(first) = buffer.first() {
                if first >> 4 != 1 {
                    return Err(format!("first packet is {}, not CONNECT", TYPES[(first >> 4) as usize]));
                }
            }
        }
        let mut at = 0;
        while buffer.len() - at >= 2 {
            let Some((len, used)) = varint(&buffer[at + 1..])? else { break };
            let total = 1 + used + len;
            if total > self.config.max_packet {
                return Err(format!("packet of {total} bytes over max_packet"));
            }
            if buffer.len() - at < total {
                break;
            }
            let kind = (buffer[at] >> 4) as usize;
            *self.seen_connect.borrow_mut() |= kind == 1;
            let metadata = self.describe(kind, &buffer[at + 1 + used..at + total])?;
            messages.push(Message {
                payload: buffer[at..at + total].to_vec(),
                metadata: Some(metadata.to_string()),
            });
            at += total;
        }
        buffer.drain(..at);
        Ok(messages)
    }

    fn encode(&self, message: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(message)
    }
}

struct Plugin;

impl Guest for Plugin {
    type Connection = Mqtt;
}

export_codec!(Plugin);

