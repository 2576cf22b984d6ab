//! Reading a structured event's JSON text straight into its parts: the attributes into
//! a short list, `data` kept as text. No JSON tree (and no hashed map) of the event is
//! built, which was the largest part of ingesting one (BENCHMARKS.md, "Where a single
//! event's instructions go").

use super::{CloudEvent, EventError, Parts, representable, scan, set_attr};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// One event as read: its parts, or the fact that it was not a JSON object.
pub(super) enum Wire {
    Object(Parts),
    NotAnObject,
}

impl Wire {
    pub(super) fn into_event(self) -> Result<CloudEvent, EventError> {
        match self {
            Wire::Object(parts) => parts.validate(),
            Wire::NotAnObject => Err(EventError::NotAnObject),
        }
    }
}

/// A batch as read: events, or the fact that it was not a JSON array.
pub(super) enum WireBatch {
    Events(Vec<Wire>),
    NotAnArray,
}

impl<'de> de::Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventVisitor)
    }
}

impl<'de> de::Deserialize<'de> for WireBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// The scalar visits of a visitor that reads any other JSON value through and answers
/// `$other` (the text is still checked as JSON).
macro_rules! other_scalars {
    ($ty:ty, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$ty, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$ty, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$ty, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$ty, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$ty, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
            Ok($other)
        }
    };
}

/// A member name, borrowed from the input where it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Accepts any JSON value: an object becomes the event's parts; anything else is
/// read through (so the text is still checked as JSON) and reported as not an object.
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Wire;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
        let mut parts = Parts::default();
        while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
            match name.as_ref() {
                // A repeated member replaces the earlier one, as in a JSON object.
                "data" => {
                    let raw = map.next_value::<Box<RawValue>>()?;
                    // A replaced member was still read as JSON by a tree; refuse what
                    // a tree refuses there too.
                    if let Some(earlier) = parts.data.replace(raw)
                        && !representable(earlier.get(), scan(earlier.get()))
                    {
                        return Err(de::Error::custom("number out of range"));
                    }
                }
                "data_base64" => parts.data_base64 = Some(map.next_value::<Value>()?),
                _ => {
                    let value = map.next_value::<Value>()?;
                    set_attr(&mut parts.attrs, name.into_owned(), value);
                }
            }
        }
        Ok(Wire::Object(parts))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Wire, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Wire::NotAnObject)
    }

    other_scalars!(Wire, Wire::NotAnObject);
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = WireBatch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event batch")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireBatch, A::Error> {
        let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(event) = seq.next_element::<Wire>()? {
            events.push(event);
        }
        Ok(WireBatch::Events(events))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireBatch, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(WireBatch::NotAnArray)
    }

    other_scalars!(WireBatch, WireBatch::NotAnArray);
}
