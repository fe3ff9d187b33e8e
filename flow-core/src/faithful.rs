//! Encoding what a run stores so that it reads back as it was written.
//!
//! serde_json writes a NaN or an infinite float as `null` (a state with an `f64` field then no
//! longer decodes, or an `Option<f64>` silently becomes `None`), and refuses a map key that is
//! not a string or a number with "key must be a string", naming no field. Everything a run
//! stores (its state, step outputs, journaled effect results) is encoded through [`Checked`],
//! a serializer that passes every call on to serde_json's own and refuses those values first.
//!
//! The check costs no extra pass: the value is encoded once, through the wrapper, into the
//! buffer that is stored. Only when something is refused is it encoded a second time, with
//! `serde_path_to_error` tracking where, so that the error names the field (`items[2].price`).

use std::cell::Cell;
use std::fmt::Display;

use serde::ser::{self, Impossible, Serialize, Serializer};
use serde_json::value::RawValue;

use uuid::Uuid;

use crate::error::{Error, FlowError, UnfaithfulValue};

/// The value refused last, set beside the serializer's own error so that the caller learns
/// what was refused without parsing an error message.
type Found = Cell<Option<UnfaithfulValue>>;

/// Why a value could not be encoded: where, and what.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Where, as `field.sub[2].key` (`.` for the value itself).
    pub(crate) path: String,
    /// The value JSON cannot hold, when that was the reason (else the serializer failed on its
    /// own: a `Serialize` impl returned an error, a number is out of range).
    pub(crate) value: Option<UnfaithfulValue>,
    /// The serializer's message.
    pub(crate) message: String,
}

impl Refused {
    /// A method error for a value a step produced (its output, an effect's result): permanent,
    /// because the same code produces the same value again.
    pub(crate) fn into_step_error(self, what: impl Display) -> Error {
        let Refused { path, value, message } = self;
        match value {
            Some(v) => Error::permanent(format!(
                "{what} holds {v} at `{path}`, which JSON cannot hold faithfully, so it was not stored; {}",
                v.advice()
            )),
            None => Error::permanent(format!("{what} does not serialize: {message} (at `{path}`)")),
        }
    }
}

/// The error for a state that does not encode, as `Execution::snapshot` reports it: for a run
/// that is not stored yet (a kickoff), which is all it knows; a step's checkpoint says more
/// (see `Execution::refuse_unfaithful`).
pub(crate) fn state_error(run_id: Uuid, state_type: &'static str, refused: Refused) -> FlowError {
    let Refused { path, value, message } = refused;
    match value {
        Some(value) => {
            let what = format!("the state `{state_type}`");
            FlowError::Unfaithful { run_id, method: None, what, path, value, run_stored: false }
        }
        None => FlowError::Serialize { run_id, what: format!("the state `{state_type}` at `{path}`"), message },
    }
}

/// Encodes `value` as JSON text, refusing what would not read back.
pub(crate) fn to_raw_value<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, Refused> {
    let found = Cell::new(None);
    serde_json::value::to_raw_value(&Checking { value, found: &found }).map_err(|e| {
        let mut sink = serde_json::Serializer::new(std::io::sink());
        locate(value, &mut sink, e)
    })
}

/// Encodes `value` as a [`serde_json::Value`], refusing what would not read back.
pub(crate) fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<serde_json::Value, Refused> {
    let found = Cell::new(None);
    Checking { value, found: &found }
        .serialize(serde_json::value::Serializer)
        .map_err(|e| locate(value, serde_json::value::Serializer, e))
}

/// Encodes `value` a second time through `serializer` (the same kind as the first time, so it
/// fails the same way) with its path tracked, to say where the first attempt failed.
#[cold]
fn locate<T, S>(value: &T, serializer: S, first: impl Display) -> Refused
where
    T: Serialize + ?Sized,
    S: Serializer,
{
    let found = Cell::new(None);
    match serde_path_to_error::serialize(value, Checked { inner: serializer, found: &found }) {
        Err(e) => Refused { path: e.path().to_string(), value: found.get(), message: e.into_inner().to_string() },
        // A value that changed in between (interior mutability): keep the first error.
        Ok(_) => Refused { path: "?".into(), value: None, message: first.to_string() },
    }
}

fn refuse<E: ser::Error>(found: &Found, value: UnfaithfulValue) -> E {
    found.set(Some(value));
    E::custom(value)
}

fn float(v: f64) -> UnfaithfulValue {
    if v.is_nan() {
        UnfaithfulValue::NaN
    } else if v > 0.0 {
        UnfaithfulValue::Infinity
    } else {
        UnfaithfulValue::NegativeInfinity
    }
}

/// A value to serialize through [`Checked`].
struct Checking<'a, T: ?Sized> {
    value: &'a T,
    found: &'a Found,
}

impl<T: Serialize + ?Sized> Serialize for Checking<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Checked { inner: serializer, found: self.found })
    }
}

/// A map key to serialize through [`CheckedKey`].
struct CheckingKey<'a, T: ?Sized> {
    key: &'a T,
    found: &'a Found,
}

impl<T: Serialize + ?Sized> Serialize for CheckingKey<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.key.serialize(CheckedKey { inner: serializer, found: self.found })
    }
}

/// A serializer that hands every call to `inner`, refusing non-finite floats and map keys that
/// are not strings, numbers, booleans, chars or unit enum variants.
struct Checked<'a, S> {
    inner: S,
    found: &'a Found,
}

/// Forwards a call with no nested values.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[inline]
            fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
                self.inner.$method($($arg),*)
            }
        )*
    };
}

impl<'a, S: Serializer> Serializer for Checked<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.inner.serialize_f32(v) } else { Err(refuse(self.found, float(f64::from(v)))) }
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.inner.serialize_f64(v) } else { Err(refuse(self.found, float(v))) }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_some(&Checking { value, found: self.found })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, &Checking { value, found: self.found })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_variant(name, index, variant, &Checking { value, found: self.found })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Ok(Compound { inner: self.inner.serialize_seq(len)?, found: self.found })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple(len)?, found: self.found })
    }

    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeTupleStruct, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple_struct(name, len)?, found: self.found })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Ok(Compound { inner: self.inner.serialize_tuple_variant(name, index, variant, len)?, found: self.found })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(Compound { inner: self.inner.serialize_map(len)?, found: self.found })
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Self::SerializeStruct, S::Error> {
        Ok(Compound { inner: self.inner.serialize_struct(name, len)?, found: self.found })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Ok(Compound { inner: self.inner.serialize_struct_variant(name, index, variant, len)?, found: self.found })
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The compound serializers of [`Checked`]: each element, field and value goes through
/// [`Checked`] too, each map key through [`CheckedKey`].
struct Compound<'a, C> {
    inner: C,
    found: &'a Found,
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&Checking { value, found: self.found })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&Checking { value, found: self.found })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&Checking { value, found: self.found })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&Checking { value, found: self.found })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(&CheckingKey { key, found: self.found })
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_value(&Checking { value, found: self.found })
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.inner.serialize_entry(&CheckingKey { key, found: self.found }, &Checking { value, found: self.found })
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &Checking { value, found: self.found })
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &Checking { value, found: self.found })
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

/// The serializer of a map key: what JSON writes as an object key and reads back as the same
/// key passes on to `inner`; anything else is refused here, before serde_json says "key must be
/// a string" without saying where (or, for an `Option`, accepts `Some` and refuses `None`).
struct CheckedKey<'a, S> {
    inner: S,
    found: &'a Found,
}

impl<S: Serializer> CheckedKey<'_, S> {
    fn refuse(&self, what: &'static str) -> S::Error {
        refuse(self.found, UnfaithfulValue::Key(what))
    }
}

impl<'a, S: Serializer> Serializer for CheckedKey<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = Impossible<S::Ok, S::Error>;
    type SerializeStruct = Impossible<S::Ok, S::Error>;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.inner.serialize_f32(v) } else { Err(self.refuse("a NaN or infinite float")) }
    }

    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        if v.is_finite() { self.inner.serialize_f64(v) } else { Err(self.refuse("a NaN or infinite float")) }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.serialize_newtype_struct(name, &CheckingKey { key: value, found: self.found })
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<S::Ok, S::Error> {
        Err(self.refuse("bytes"))
    }

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        Err(self.refuse("an Option"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<S::Ok, S::Error> {
        Err(self.refuse("an Option"))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        Err(self.refuse("`()`"))
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<S::Ok, S::Error> {
        Err(self.refuse("a unit struct"))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(self.refuse("an enum variant with data"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Err(self.refuse("a sequence"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        Err(self.refuse("a tuple"))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, S::Error> {
        Err(self.refuse("a tuple struct"))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Err(self.refuse("an enum variant with data"))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Err(self.refuse("a map"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, S::Error> {
        Err(self.refuse("a struct"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Err(self.refuse("an enum variant with data"))
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::*;

    /// Encodes `value` both ways, checks that a value that passes is encoded exactly as
    /// serde_json encodes it, and returns where and what was refused.
    fn refused<T: Serialize>(value: &T) -> Option<(String, Option<UnfaithfulValue>)> {
        let raw = to_raw_value(value);
        let tree = to_value(value);
        match (raw, tree) {
            (Ok(raw), Ok(tree)) => {
                assert_eq!(raw.get(), serde_json::to_string(value).unwrap());
                assert_eq!(tree, serde_json::to_value(value).unwrap());
                None
            }
            (Err(raw), Err(tree)) => {
                assert_eq!((&raw.path, raw.value), (&tree.path, tree.value), "both encoders agree");
                Some((raw.path, raw.value))
            }
            (raw, tree) => panic!("the encoders disagree: {raw:?} / {tree:?}"),
        }
    }

    fn at(path: &str, value: UnfaithfulValue) -> Option<(String, Option<UnfaithfulValue>)> {
        Some((path.to_string(), Some(value)))
    }

    #[derive(Serialize)]
    struct Item {
        sku: &'static str,
        price: f64,
    }

    #[derive(Serialize)]
    struct Order {
        items: Vec<Item>,
        discount: Option<f32>,
        weight: Meters,
        shape: Shape,
    }

    #[derive(Serialize)]
    struct Meters(f64);

    #[derive(Serialize)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: f64, h: f64 },
        Pair(f64, f64),
    }

    fn order() -> Order {
        Order {
            items: vec![Item { sku: "a", price: 1.0 }, Item { sku: "b", price: 2.0 }],
            discount: None,
            weight: Meters(3.0),
            shape: Shape::Dot,
        }
    }

    #[test]
    fn finite_values_encode_exactly_as_serde_json_does() {
        assert_eq!(refused(&order()), None);
        for shape in [Shape::Circle(1.0), Shape::Rect { w: 1.0, h: -2.5 }, Shape::Pair(0.0, f64::MAX)] {
            assert_eq!(refused(&Order { shape, discount: Some(f32::MIN_POSITIVE), ..order() }), None);
        }
        assert_eq!(refused(&(1u128 << 60, -1i128, 'x', "text", (), Some(()), [1u8, 2])), None);
    }

    #[test]
    fn a_nan_or_an_infinity_is_refused_naming_its_path() {
        let mut o = order();
        o.items[1].price = f64::NAN;
        assert_eq!(refused(&o), at("items[1].price", UnfaithfulValue::NaN));
        assert_eq!(
            refused(&Order { discount: Some(f32::INFINITY), ..order() }),
            at("discount", UnfaithfulValue::Infinity)
        );
        assert_eq!(
            refused(&Order { weight: Meters(f64::NEG_INFINITY), ..order() }),
            at("weight", UnfaithfulValue::NegativeInfinity)
        );
        assert_eq!(refused(&f64::NAN), at(".", UnfaithfulValue::NaN));
        assert_eq!(refused(&vec![vec![1.0], vec![2.0, f64::NAN]]), at("[1][1]", UnfaithfulValue::NaN));
    }

    #[test]
    fn enum_variants_are_checked_inside() {
        for (shape, path) in [
            // serde_path_to_error names no variant when it serializes.
            (Shape::Circle(f64::NAN), "shape"),
            (Shape::Rect { w: 1.0, h: f64::NAN }, "shape.h"),
            (Shape::Pair(1.0, f64::NAN), "shape[1]"),
        ] {
            assert_eq!(refused(&Order { shape, ..order() }), at(path, UnfaithfulValue::NaN));
        }

        #[derive(Serialize)]
        #[serde(tag = "kind")]
        enum Tagged {
            Fee { amount: f64 },
        }
        assert_eq!(refused(&Tagged::Fee { amount: f64::NAN }), at("amount", UnfaithfulValue::NaN));

        #[derive(Serialize)]
        struct Flat {
            id: u32,
            #[serde(flatten)]
            extra: BTreeMap<String, f64>,
        }
        let flat = Flat { id: 1, extra: BTreeMap::from([("rate".to_string(), f64::NAN)]) };
        assert_eq!(refused(&flat), at("rate", UnfaithfulValue::NaN));
    }

    #[test]
    fn map_keys_that_read_back_pass_and_values_are_checked_under_their_key() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum Colour {
            Red,
        }
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        struct Sku(String);

        assert_eq!(refused(&BTreeMap::from([(1u32, 1.0), (u32::MAX, 2.0)])), None);
        assert_eq!(refused(&BTreeMap::from([(-7i64, "x")])), None);
        assert_eq!(refused(&BTreeMap::from([(true, 1)])), None);
        assert_eq!(refused(&BTreeMap::from([('c', 1)])), None);
        assert_eq!(refused(&BTreeMap::from([(Colour::Red, 1)])), None);
        assert_eq!(refused(&BTreeMap::from([(Sku("s-1".into()), 1)])), None);
        assert_eq!(refused(&HashMap::from([(1.5f64.to_bits(), 1)])), None);

        let prices = BTreeMap::from([("a".to_string(), 1.0), ("b".to_string(), f64::NAN)]);
        assert_eq!(refused(&prices), at("b", UnfaithfulValue::NaN));
        let by_id = BTreeMap::from([(7u8, BTreeMap::from([(9u16, f64::INFINITY)]))]);
        assert_eq!(refused(&by_id), at("7.9", UnfaithfulValue::Infinity));

        // Integer keys read back as the integers they were.
        let json = to_raw_value(&BTreeMap::from([(3u8, 1.0)])).unwrap();
        assert_eq!(serde_json::from_str::<BTreeMap<u8, f64>>(json.get()).unwrap(), BTreeMap::from([(3u8, 1.0)]));
    }

    #[test]
    fn map_keys_that_json_cannot_hold_are_refused_naming_the_map() {
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        struct Cell {
            x: u8,
            y: u8,
        }
        #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
        enum Slot {
            At(u8),
        }
        #[derive(Serialize)]
        struct Grid {
            pairs: HashMap<(u8, u8), u32>,
            cells: BTreeMap<Cell, u32>,
        }
        let empty = || Grid { pairs: HashMap::new(), cells: BTreeMap::new() };
        assert_eq!(refused(&empty()), None);
        let grid = Grid { pairs: HashMap::from([((3, 4), 1)]), ..empty() };
        assert_eq!(refused(&grid), at("pairs", UnfaithfulValue::Key("a tuple")));
        let grid = Grid { cells: BTreeMap::from([(Cell { x: 1, y: 2 }, 1)]), ..empty() };
        assert_eq!(refused(&grid), at("cells", UnfaithfulValue::Key("a struct")));

        assert_eq!(
            refused(&BTreeMap::from([(Slot::At(1), 1)])),
            at(".", UnfaithfulValue::Key("an enum variant with data"))
        );
        assert_eq!(refused(&BTreeMap::from([(Some(1), 1)])), at(".", UnfaithfulValue::Key("an Option")));
        assert_eq!(refused(&BTreeMap::from([(vec![1], 1)])), at(".", UnfaithfulValue::Key("a sequence")));
        assert_eq!(refused(&BTreeMap::from([((), 1)])), at(".", UnfaithfulValue::Key("`()`")));
        let nan_key = [(f64::NAN, 1)];
        assert_eq!(refused(&serde_json_map(&nan_key)), at(".", UnfaithfulValue::Key("a NaN or infinite float")));
    }

    /// A map with float keys (std has no map type for them).
    fn serde_json_map(entries: &[(f64, i32)]) -> impl Serialize + '_ {
        struct Entries<'a>(&'a [(f64, i32)]);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        Entries(entries)
    }

    #[test]
    fn a_serializer_error_of_its_own_keeps_its_message_and_gains_a_path() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("the lock is poisoned"))
            }
        }
        let r = to_raw_value(&BTreeMap::from([("cache", vec![Fails])])).unwrap_err();
        assert_eq!((r.path.as_str(), r.value, r.message.as_str()), ("cache[0]", None, "the lock is poisoned"));
        let e = r.into_step_error("its output");
        assert_eq!(e.class(), crate::ErrorClass::Permanent);
        assert_eq!(e.message(), "its output does not serialize: the lock is poisoned (at `cache[0]`)");
    }

    #[test]
    fn a_refusal_becomes_a_permanent_step_error_that_says_what_to_do() {
        let e = to_value(&[f64::NAN]).unwrap_err().into_step_error("its output");
        assert_eq!(e.class(), crate::ErrorClass::Permanent);
        assert!(e.message().starts_with("its output holds NaN at `[0]`"), "{e}");
        assert!(e.message().contains("Option<f64>"), "{e}");
    }
}
