"""Storage: the tables (:mod:`.models`), opening, migrating and seeding a database (:mod:`.db`),
PostgreSQL's differences (:mod:`.postgres`), SQLite backups (:mod:`.backup`), copying a whole
database (:mod:`.dbcopy`) and what a database URL names on disk (:mod:`.paths`)."""
