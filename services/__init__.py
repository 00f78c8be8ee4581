"""The seed's services: domain rules composed with the database and the object store."""
