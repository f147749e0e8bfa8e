"""Supervision trees with OTP semantics, on the ``actors`` runtime.

Child specs, the one_for_one / one_for_all / rest_for_one strategies, a dynamic
(simple_one_for_one) supervisor, restart intensity with escalation, OTP's start and shutdown
order, optional restart backoff, restart history, the tree as data, and an application entry
point. See docs/supervisors.md.
"""

from ._api import count_children as count_children
from ._api import delete_child as delete_child
from ._api import get_childspec as get_childspec
from ._api import restart_child as restart_child
from ._api import start_child as start_child
from ._api import terminate_child as terminate_child
from ._api import which_children as which_children
from ._app import run_application as run_application
from ._dynamic import DynamicSupervisor as DynamicSupervisor
from ._errors import AlreadyPresentError as AlreadyPresentError
from ._errors import ChildNotFoundError as ChildNotFoundError
from ._errors import ChildRunningError as ChildRunningError
from ._errors import Ignore as Ignore
from ._errors import NotAllowedError as NotAllowedError
from ._errors import SpecError as SpecError
from ._errors import StartChildError as StartChildError
from ._errors import SupervisorError as SupervisorError
from ._restarts import ChildCounts as ChildCounts
from ._restarts import ChildInfo as ChildInfo
from ._spec import BRUTAL_KILL as BRUTAL_KILL
from ._spec import INFINITY as INFINITY
from ._spec import Backoff as Backoff
from ._spec import ChildSpec as ChildSpec
from ._spec import ChildType as ChildType
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._spec import SupervisorFlags as SupervisorFlags
from ._supervisor import Supervisor as Supervisor
from ._supervisor import is_supervisor as is_supervisor
from ._tree import TreeNode as TreeNode
from ._tree import tree as tree
