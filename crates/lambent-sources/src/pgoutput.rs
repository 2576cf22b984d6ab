//! The pgoutput logical replication protocol (version 1), as far as row changes go:
//! Begin, Commit, Relation, Insert, Update, Delete. Values arrive as text; they become
//! JSON by their column's type.

use serde_json::{Map, Value};
use std::collections::HashMap;

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub schema: String,
    pub table: String,
    /// Column names and type oids, in order.
    pub columns: Vec<(String, u32)>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Begin,
    Commit,
    Relation(u32, Relation),
    Change(Change),
    /// Truncate, Type, Origin, logical messages: not row changes.
    Other,
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub relation: u32,
    pub operation: &'static str,
    /// The new row (insert, update).
    pub row: Option<Vec<Option<String>>>,
    /// The old row or its key (update with a replica identity, delete).
    pub old: Option<Vec<Option<String>>>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("message ends early".into());
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
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Option<String>>, String> {
        let n = self.u16()?;
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' | b'u' => None,
                b't' => {
                    let len = self.u32()? as usize;
                    Some(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                other => return Err(format!("unknown tuple value kind {other}")),
            });
        }
        Ok(values)
    }
}

pub fn decode(data: &[u8]) -> Result<Decoded, String> {
    let mut r = Reader(data);
    Ok(match r.u8()? {
        b'B' => Decoded::Begin,
        b'C' => Decoded::Commit,
        b'R' => {
            let id = r.u32()?;
            let schema = r.string()?;
            let table = r.string()?;
            let _identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let _flags = r.u8()?;
                let name = r.string()?;
                let oid = r.u32()?;
                let _typmod = r.u32()?;
                columns.push((name, oid));
            }
            Decoded::Relation(
                id,
                Relation {
                    schema,
                    table,
                    columns,
                },
            )
        }
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err("insert without a new tuple".into());
            }
            Decoded::Change(Change {
                relation,
                operation: "insert",
                row: Some(r.tuple()?),
                old: None,
            })
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err("update without a new tuple".into());
            }
            Decoded::Change(Change {
                relation,
                operation: "update",
                row: Some(r.tuple()?),
                old,
            })
        }
        b'D' => {
            let relation = r.u32()?;
            let _kind = r.u8()?;
            Decoded::Change(Change {
                relation,
                operation: "delete",
                row: None,
                old: Some(r.tuple()?),
            })
        }
        _ => Decoded::Other,
    })
}

/// A text value as JSON, by its type: numbers, booleans and JSON stay themselves.
fn value(text: &str, oid: u32) -> Value {
    match oid {
        // int2, int4, int8, oid
        21 | 23 | 20 | 26 => text
            .parse::<i64>()
            .map_or_else(|_| text.into(), Value::from),
        // float4, float8, numeric
        700 | 701 | 1700 => serde_json::from_str::<serde_json::Number>(text)
            .map_or_else(|_| text.into(), Value::Number),
        16 => Value::Bool(text == "t"),
        114 | 3802 => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
        _ => text.into(),
    }
}

/// A row as a JSON object (columns left out, like unchanged TOAST values or the
/// non-key columns of an old key tuple, are absent, not null).
pub fn row_json(relation: &Relation, values: &[Option<String>]) -> Value {
    let mut row = Map::new();
    for ((name, oid), v) in relation.columns.iter().zip(values) {
        row.insert(
            name.clone(),
            v.as_deref().map_or(Value::Null, |t| value(t, *oid)),
        );
    }
    Value::Object(row)
}

/// Relations seen so far in a decoding session.
pub type Relations = HashMap<u32, Relation>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn relation_message() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"public\0orders\0");
        m.push(b'd');
        m.extend(3u16.to_be_bytes());
        for (name, oid) in [("id", 23u32), ("item", 25), ("paid", 16)] {
            m.push(1);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(oid.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut t = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => t.push(b'n'),
                Some(s) => {
                    t.push(b't');
                    t.extend((s.len() as u32).to_be_bytes());
                    t.extend(s.as_bytes());
                }
            }
        }
        t
    }

    #[test]
    fn relations_and_row_changes_decode_to_json() {
        let Decoded::Relation(id, relation) = decode(&relation_message()).unwrap() else {
            panic!("not a relation");
        };
        assert_eq!((id, relation.table.as_str()), (16384, "orders"));
        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("7"), Some("book"), Some("t")]));
        let Decoded::Change(change) = decode(&insert).unwrap() else {
            panic!("not a change");
        };
        assert_eq!(change.operation, "insert");
        assert_eq!(
            row_json(&relation, change.row.as_ref().unwrap()),
            serde_json::json!({"id": 7, "item": "book", "paid": true})
        );
        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple(&[Some("7"), None, None]));
        update.push(b'N');
        update.extend(tuple(&[Some("7"), Some("pen"), Some("f")]));
        let Decoded::Change(change) = decode(&update).unwrap() else {
            panic!("not a change");
        };
        assert_eq!(change.old.unwrap()[0].as_deref(), Some("7"));
        assert!(decode(&[b'I', 0, 0]).is_err());
    }
}
