-- A grant whose team or user the directory deleted gives nothing and never can again (SCIM ids
-- are never given twice); deleting a team or user now deletes its grants in the same
-- transaction. These are the ones left by deletions before that.
delete from grants g
 where (g.subject_kind = 'team'
        and not exists (select 1 from scim_groups sg where sg.tenant_id = g.tenant_id and sg.id = g.subject_id))
    or (g.subject_kind = 'user'
        and not exists (select 1 from scim_users su where su.tenant_id = g.tenant_id and su.id = g.subject_id));
