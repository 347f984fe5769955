//! The request model: which features, for which entity rows. Transports decode their wire format
//! into it; entity values stay in the transport's representation behind [`EntityColumn`], so
//! nothing is copied before it is needed.

use std::borrow::Cow;

use super::LookupError;
use crate::entity_key::KeyPart;
use crate::types::{ScalarType, Value, ValueType};

/// A lookup: features (or a feature service) for a set of entity rows.
#[derive(Debug)]
pub struct OnlineRequest<'r, C> {
    /// `view:feature` references (or whole views).
    pub features: Option<&'r [Cow<'r, str>]>,
    /// A feature service name, instead of `features`.
    pub feature_service: Option<&'r str>,
    /// Columns of entity rows in request order: join keys and request fields.
    pub entities: Vec<(&'r str, &'r C)>,
    /// Name features `view__feature` instead of `feature`.
    pub full_feature_names: bool,
}

/// One column of entity values as a transport decoded it (a JSON array for HTTP).
pub trait EntityColumn {
    /// Number of values, or why the column is not a list of values.
    fn row_count(&self) -> Result<usize, String>;
    /// Row `row` as a join-key value of type `dtype`; `scratch` holds decoded bytes.
    fn key_part<'a>(
        &'a self,
        row: usize,
        dtype: ScalarType,
        scratch: &'a mut Vec<u8>,
    ) -> Result<KeyPart<'a>, String>;
    /// Row `row` as a request-field value of type `dtype`.
    fn value(&self, row: usize, dtype: ValueType) -> Result<Value, String>;
}

/// The entity rows of a request, checked: at least one column, equal lengths, within limits.
#[derive(Debug)]
pub struct EntityRows<'r, C> {
    /// Columns in request order: name and values.
    pub columns: &'r [(&'r str, &'r C)],
    /// Number of rows.
    pub len: usize,
}

impl<'r, C: EntityColumn> EntityRows<'r, C> {
    /// Checks the entity columns of a request.
    pub fn new(columns: &'r [(&'r str, &'r C)], max_entities: usize) -> Result<Self, LookupError> {
        if columns.is_empty() {
            return Err(LookupError::InvalidRequest(
                "\"entities\" is empty: give at least one join key column".into(),
            ));
        }
        let mut len = None;
        for (name, values) in columns {
            let n = values
                .row_count()
                .map_err(|m| LookupError::InvalidRequest(format!("entities.{name} {m}")))?;
            match len {
                None => len = Some(n),
                Some(first) if first != n => {
                    return Err(LookupError::InvalidRequest(format!(
                        "entity columns have unequal lengths: {name} has {n} values, {} has {first}",
                        columns[0].0,
                    )));
                }
                Some(_) => {}
            }
        }
        let len = len.unwrap_or(0);
        if len > max_entities {
            return Err(LookupError::TooLarge(format!(
                "{len} entity rows requested; the limit is {max_entities} (server.max_entities)"
            )));
        }
        Ok(EntityRows { columns, len })
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&'r C> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}
