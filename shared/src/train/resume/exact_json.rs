//! JSON text in which every floating-point number is a string holding its exact shortest form,
//! so that infinities, `NaN` and every finite `f64` come back bit for bit (integers stay
//! numbers). Serialising goes through `toml::Value`, which holds any `f64` as it is (unlike
//! `serde_json::Value`, which turns infinities into `null`); deserialising wraps
//! `serde_json::Value` in a deserializer that parses such a string where a float is wanted.
use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Error, Value};

/// `value` as JSON text with floats as strings.
pub(super) fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    let tree = toml::Value::try_from(value).map_err(|e| e.to_string())?;
    serde_json::to_string(&to_json(tree)?).map_err(|e| e.to_string())
}

fn to_json(v: toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::String(format!("{f:?}")),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => return Err(format!("unexpected date-time {d}")),
        toml::Value::Array(a) => {
            Value::Array(a.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Parses text written by [`to_string`].
pub(super) fn from_str<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Error> {
    T::deserialize(Exact(serde_json::from_str(text)?))
}

/// A JSON value whose strings are read as floats where the type asks for a float.
struct Exact(Value);

impl<'de> IntoDeserializer<'de, Error> for Exact {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for Exact {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => {
                let mut seq = SeqDeserializer::new(a.into_iter().map(Exact));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Object(m) => {
                let mut map = MapDeserializer::new(m.into_iter().map(|(k, v)| (k, Exact(v))));
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => match s.parse::<f64>() {
                Ok(x) => visitor.visit_f64(x),
                Err(_) => Err(de::Error::invalid_value(Unexpected::Str(&s), &"a number")),
            },
            other => Exact(other).deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Exact(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(s)),
            _ => Err(de::Error::custom("only unit enum variants are supported")),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
