-- The M3 Bridge product table in the QuoteWerks SQL Server database (docs/quotewerks-interface.md §4, "Products").
-- catalog-sync keeps one row per M3 item here (M3 item number, description, unit, the configured price list's
-- price, active = M3 status 20, availability in the configured warehouse); QuoteWerks links the table as a product
-- database. The bridge owns this table and writes nothing else in QuoteWerks' database except the quote write-back
-- columns. Run as a DBA in the QuoteWerks database, after the login and user of README "QuoteWerks" step 1.
-- tests/unit/test_quotewerks_sql_mssql.py checks that the CREATE TABLE below is what the bridge expects.

CREATE TABLE [M3BridgeProducts] (
	[ManufacturerPartNumber] NVARCHAR(50) NOT NULL,
	[Description] NVARCHAR(255) NOT NULL,
	[UnitOfMeasure] NVARCHAR(20) NOT NULL,
	[Price] NUMERIC(19, 4) NOT NULL,
	[Active] BIT NOT NULL,
	[Availability] INTEGER NOT NULL,
	[LastModified] DATETIME NOT NULL,
	PRIMARY KEY ([ManufacturerPartNumber])
);

-- The bridge's login: full rights on its own table only.
GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.M3BridgeProducts TO m3bridge;

-- QuoteWerks users read it (the login QuoteWerks uses for the database; name as in your installation).
-- GRANT SELECT ON dbo.M3BridgeProducts TO <QuoteWerks login or role>;
