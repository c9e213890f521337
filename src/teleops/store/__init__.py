"""Storage: SQLAlchemy Core tables, repositories and Alembic migrations. The only package that imports sqlalchemy."""
