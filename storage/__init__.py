"""Parley's storage layer: records, the shard ring, backend URLs and the per-shard backends.

One ``StorageShard`` actor per shard (group commit, read pool, bounded queue, circuit breaker)
under a ``StorageSupervisor``; ``Storage`` is the facade the chat actors call; ``Failpoints``
crash the shard actors on purpose, for chaos tests.
"""

from ._backend import Backend as Backend
from ._bridge import AsyncioBridge as AsyncioBridge
from ._bridge import wait_threadsafe as wait_threadsafe
from ._cassandra import BUCKET_SIZE as BUCKET_SIZE
from ._cassandra import CassandraBackend as CassandraBackend
from ._errors import ConfigError as ConfigError
from ._errors import SchemaMismatch as SchemaMismatch
from ._errors import SeqConflict as SeqConflict
from ._errors import StorageError as StorageError
from ._errors import Unavailable as Unavailable
from ._failpoints import FAILPOINTS as FAILPOINTS
from ._failpoints import STORAGE_AFTER_COMMIT as STORAGE_AFTER_COMMIT
from ._failpoints import STORAGE_AFTER_REPLY as STORAGE_AFTER_REPLY
from ._failpoints import FailpointCrash as FailpointCrash
from ._failpoints import Failpoints as Failpoints
from ._failpoints import FailpointState as FailpointState
from ._records import AppendResult as AppendResult
from ._records import Conversation as Conversation
from ._records import ConversationKind as ConversationKind
from ._records import Message as Message
from ._records import Role as Role
from ._records import UserConversation as UserConversation
from ._records import direct_key as direct_key
from ._ring import DEFAULT_VNODES as DEFAULT_VNODES
from ._ring import HashRing as HashRing
from ._shard_actor import DEFAULT_MAX_BATCH as DEFAULT_MAX_BATCH
from ._shard_actor import DEFAULT_MAX_QUEUE as DEFAULT_MAX_QUEUE
from ._shard_actor import DEFAULT_PIPELINE as DEFAULT_PIPELINE
from ._shard_actor import ShardOptions as ShardOptions
from ._shard_actor import StorageShard as StorageShard
from ._shard_actor import shard_name as shard_name
from ._sharded import ShardedStorage as ShardedStorage
from ._sharded import backend_from_url as backend_from_url
from ._sharded import sqlite_shard_urls as sqlite_shard_urls
from ._sql import SqlBackend as SqlBackend
from ._storage import DEFAULT_STORAGE_TIMEOUT as DEFAULT_STORAGE_TIMEOUT
from ._storage import SHARD_BACKOFF as SHARD_BACKOFF
from ._storage import Storage as Storage
from ._storage import StorageSupervisor as StorageSupervisor
from ._storage import storage_child_spec as storage_child_spec
from ._url import BackendUrl as BackendUrl
from ._url import CassandraUrl as CassandraUrl
from ._url import PostgresUrl as PostgresUrl
from ._url import SqliteUrl as SqliteUrl
from ._url import parse_url as parse_url
