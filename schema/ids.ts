// Session and kernel ids are UUIDs (PostgreSQL `uuid` columns); a string that is not one names
// nothing, and casting it to uuid in SQL would be an error rather than no match.
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
